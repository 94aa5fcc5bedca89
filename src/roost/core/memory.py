"""Giving freed memory back to the operating system.

After a burst (thousands of logins, a presence storm) the C allocator keeps the pages it
grew into, so a server whose sessions then go idle and shrink (see parser hibernation) still
shows the peak in its RSS. glibc's ``malloc_trim`` returns free pages at the top of the heap
and in the middle of it (``madvise``). It is not exposed by the standard library, hence
ctypes; on other C libraries this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _load_trim()


def release_free_memory() -> bool:
    """Return free heap memory to the OS; True when something was released."""
    if _TRIM is None:
        return False
    return bool(_TRIM(0))
