"""The C library's allocator controls, when the process runs on glibc (Linux); None elsewhere."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys


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
