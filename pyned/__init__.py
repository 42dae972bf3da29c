"""pyned: a ned/uvmm-style VM host on an emulated Armv8-R AArch64 (Cortex-R82) platform."""

__version__ = "0.1.0"
__all__ = ["__version__"]
