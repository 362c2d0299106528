"""Full garbage collections when the session chooses, not when the allocator's counter says.

CPython collects its oldest generation once enough new objects have survived, and a full
collection walks every tracked object that is not frozen. In a completion burst at 100,000
jobs the session makes hundreds of thousands of them (queued fetches, buffered events) and
the collector ran full passes of 200-900 ms on the loop, each finding nothing: the
session's objects do not form cycles. The pace keeps the young generations as they are,
takes the oldest out of the allocator's hands, and runs it every few minutes instead,
freezing what survives so the next pass only walks what was made since.

Objects frozen while alive that later form garbage cycles are not collected (plain garbage
still goes at once, by reference counting); the session makes few such cycles.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from typing import Final

__all__ = ["CollectionPace"]

log = logging.getLogger(__name__)

_NEVER: Final = 1_000_000
"""Young collections between two automatic full ones: in practice never."""


class CollectionPace:
    """Full collections every ``every`` seconds on the loop, none in between.

    Args:
        every: seconds between two full collections; ``None``: only when the owner calls
            :meth:`collect` (a viewer collects between keys, at moments of its choosing).
    """

    def __init__(self, every: float | None = 300.0) -> None:
        self.every = every
        self.collections = 0
        """Full collections run so far."""
        self.last_pause = 0.0
        """Seconds the last one took."""
        self._saved: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Freeze what exists now and take over the full collections (on the running loop)."""
        gc.freeze()
        if self._saved is None:
            self._saved = gc.get_threshold()
            young, middle, _ = self._saved
            gc.set_threshold(young, middle, _NEVER)
        if self._task is None and self.every is not None:
            self._task = asyncio.get_running_loop().create_task(self._run(self.every), name="monitor.gc-pace")

    async def _run(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            self.collect()

    def collect(self) -> int:
        """One full collection now, then freeze the survivors; return the objects collected."""
        started = time.perf_counter()
        found = gc.collect()
        gc.freeze()
        self.last_pause = time.perf_counter() - started
        self.collections += 1
        log.debug("full collection: %d objects in %.3f s", found, self.last_pause)
        return found

    async def aclose(self) -> None:
        """Stop collecting on a schedule and give the allocator its thresholds back."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None
