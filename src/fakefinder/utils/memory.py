"""Keep a long-running process's heap from creeping up.

Face detection allocates many short-lived buffers of varying size; with glibc's default adaptive
mmap threshold they end up on the main heap, fragment it, and peak RSS grows with the number of
videos processed (measured: +35% from 4 to 16 videos). A fixed 1 MiB mmap threshold returns big
buffers to the system at once, which keeps peak RSS flat (+4%). A no-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_MMAP_THRESHOLD = -3


def limit_heap_growth(threshold_bytes: int = 1 << 20) -> bool:
    """Set glibc's mmap threshold; True when it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold_bytes))
    except (OSError, AttributeError):
        return False
