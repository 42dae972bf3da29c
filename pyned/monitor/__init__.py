"""The monitor: a socket server for people and programs to reach every VM.

It gives what cons and uvmm's monitor give on L4Re (l4re-uvmm-ned.md §6):
the console multiplexer, uvmm's inspection commands per VM (also on each VM's
own ``monN`` channel), plus lifecycle control that uvmm lacks. ``server`` has
the sockets and sessions, ``registry`` the command table, ``vm_commands`` and
``system_commands`` the commands, ``client`` the ``pyned monitor`` client.
"""

from pyned.monitor.registry import CommandError, Reply
from pyned.monitor.server import Address, Listener, Monitor, parse_address

__all__ = ["Address", "CommandError", "Listener", "Monitor", "Reply", "parse_address"]
