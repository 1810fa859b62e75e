"""The C library's allocator controls, when the process runs on glibc (Linux); None elsewhere."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable


def glibc() -> ctypes.CDLL | None:
    """glibc loaded through ctypes, or None off Linux or where the C library cannot be found."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def heap_trimmer() -> Callable[[], None] | None:
    """A call that hands the heap's free pages back to the OS (glibc ``malloc_trim``), or None.

    glibc keeps freed memory of large decodes in its arenas for reuse, so one giant image would
    otherwise raise the process's resident size for good.
    """
    libc = glibc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:  # not glibc (e.g. musl), or not Linux
        return None

    def run() -> None:
        trim(0)

    return run
