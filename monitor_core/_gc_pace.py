"""Full garbage collections when the session chooses, not when the allocator's counter says.

CPython collects its oldest generation once enough new objects have survived, and a full
collection walks every tracked object that is not frozen. In a completion burst at 100,000
jobs the session makes hundreds of thousands of them (queued fetches, buffered events) and
the collector ran full passes of 200-900 ms on the loop, each finding nothing: the
session's objects do not form cycles. The pace keeps the young generations as they are,
takes the oldest out of the allocator's hands, and runs it every few minutes instead,
freezing what survives so the next pass only walks what was made since.

Objects frozen while alive that later form garbage cycles are not collected by these passes
(plain garbage still goes at once, by reference counting). The session makes few such cycles;
a viewer makes many (every screen it opens and closes is one), so it also sweeps now and then:
:meth:`CollectionPace.sweep` collects the frozen objects too.
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
        """Full collections run so far (sweeps among them)."""
        self.sweeps = 0
        """Sweeps run so far."""
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
        return self._pass(sweep=False)

    def sweep(self) -> int:
        """A full collection of every object, the frozen ones too, then freeze the survivors.

        What was alive when a pass froze it and became cyclic garbage later is found only here:
        a viewer's closed screens are (100 KB each, 20 MB over half an hour of looking at jobs).
        It walks everything (a quarter of a second at 100,000 jobs), so it is for quiet moments.
        """
        return self._pass(sweep=True)

    def _pass(self, *, sweep: bool) -> int:
        started = time.perf_counter()
        if sweep:
            gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self.last_pause = time.perf_counter() - started
        self.collections += 1
        self.sweeps += sweep
        log.debug("full %s: %d objects in %.3f s", "sweep" if sweep else "collection", found, self.last_pause)
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
