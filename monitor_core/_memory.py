"""Giving freed memory back to the system after a large transient allocation.

Encoding a snapshot of 100,000 jobs allocates tens of MB for a moment; once freed, glibc's
allocator keeps much of it in its heap (and raises its mmap threshold, so later large
buffers land there too), and the session's resident size stays at its peak.
``malloc_trim`` returns the free pages. Elsewhere (another C library) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable

__all__ = ["release_free_memory"]

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    function: Callable[[int], int] = trim
    return function


def release_free_memory() -> bool:
    """Return the C allocator's free memory to the system; ``True`` when some was returned.

    It walks the allocator's heaps (milliseconds for a few hundred MB), so call it off the
    loop, e.g. through :func:`asyncio.to_thread`.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    try:
        return bool(trim(0))
    except OSError as exc:  # pragma: no cover - a C library without malloc_trim raises earlier
        log.debug("malloc_trim failed: %s", exc)
        return False
