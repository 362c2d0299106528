"""Giving freed memory back to the system after a large transient allocation.

Encoding a snapshot of 100,000 jobs allocates tens of MB for a moment; once freed, glibc's
allocator keeps much of it in its heap (and raises its mmap threshold, so later large
buffers land there too), and the session's resident size stays at its peak.
``malloc_trim`` returns the free pages, and :func:`tune_allocator` keeps such buffers out of
the heap in the first place. Elsewhere (another C library) both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable
from typing import Any, Final

__all__ = ["release_free_memory", "tune_allocator"]

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD: Final = -3
_M_ARENA_MAX: Final = -8
_LARGE: Final = 256 * 1024
"""Bytes from which a buffer is mapped on its own and unmapped when freed."""
_ARENAS: Final = 2


@functools.cache
def _c_function(name: str, argtypes: tuple[type[Any], ...]) -> Callable[..., int] | None:
    """A function of the C library, typed, returning an ``int``; ``None`` where there is none."""
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    try:
        function = getattr(ctypes.CDLL(library), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = list(argtypes)
    function.restype = ctypes.c_int
    typed: Callable[..., int] = function
    return typed


def release_free_memory() -> bool:
    """Return the C allocator's free memory to the system; ``True`` when some was returned.

    It walks the allocator's heaps (milliseconds for a few hundred MB), so call it off the
    loop, e.g. through :func:`asyncio.to_thread`.
    """
    trim = _c_function("malloc_trim", (ctypes.c_size_t,))
    if trim is None:
        return False
    try:
        return bool(trim(0))
    except OSError as exc:  # pragma: no cover - a C library without malloc_trim raises earlier
        log.debug("malloc_trim failed: %s", exc)
        return False


def tune_allocator() -> bool:
    """Set glibc's allocator for a process that holds many small objects and a few large passing buffers.

    - Buffers of 256 KiB and more (a snapshot's pieces, a message being decoded) are mapped on
      their own and returned when freed. glibc's default threshold rises past each such buffer
      freed, so the next ones stay in the heap at its high-water mark.
    - Two arenas, not eight per core: each worker thread (the store's writer, snapshot
      encoding, file copies) otherwise gets one of its own that keeps its peak. The threads
      take turns on the interpreter lock anyway, so they gain nothing from separate arenas.

    Call it once, early, in a process's entry point: it changes the whole process. ``True``
    when both settings took.
    """
    mallopt = _c_function("mallopt", (ctypes.c_int, ctypes.c_int))
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _LARGE)) and bool(mallopt(_M_ARENA_MAX, _ARENAS))
