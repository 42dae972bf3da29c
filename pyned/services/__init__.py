"""Built-in programs a ned script starts as ``rom/NAME``: uvmm, cons."""
