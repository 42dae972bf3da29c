"""Errors a user can cause. Each prints as one line naming the file, line or key.

Anything a guest does is not an error here: guest faults end that VM (see
``pyned.vmm.vm``), they never raise into the host.
"""


class PynedError(Exception):
    """Base of every user-facing error; ``str()`` is the one-line message."""


class ConfigError(PynedError):
    """A bad option, key or value in a script or command line."""


class RomError(PynedError):
    """A ``rom/NAME`` that cannot be found or read."""


class ImageError(PynedError):
    """A kernel, ramdisk or device tree that is malformed or does not fit."""


class MemoryLayoutError(PynedError):
    """An impossible memory layout: overlapping RAM, no room, region limit exceeded."""


class ScriptError(PynedError):
    """A Lua syntax or runtime error in a ned script."""


class SelfTestError(PynedError):
    """The CPU emulator does not behave as the vCPU layer requires."""
