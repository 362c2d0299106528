"""How late the session's event loop runs what is due: the figure behind "the loop never blocks".

Status lag says how stale the jobs are; this says how long anything waiting on the loop (a
viewer's snapshot, a command, a poll's answer) waited for its turn. A task due every few
milliseconds notes how late each wake-up came, in bins of lateness; each heartbeat carries the
counts since the one before and the worst, so a reader can tell a quantile over any stretch.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from typing import Final

__all__ = ["LOOP_LAG_BOUNDS", "LoopLagProbe", "loop_lag_quantile"]

_EVERY: Final = 0.01
LOOP_LAG_BOUNDS: Final = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""Upper bounds, in seconds, of the lateness bins; a last bin holds what is later than all of them."""


class LoopLagProbe:
    """The lateness of a wake-up due every ``every`` seconds: counts per bin and the worst, since last taken.

    Args:
        every: seconds between wake-ups; a stall shorter than this can go unseen.
    """

    __slots__ = ("_bins", "_every", "_worst")

    def __init__(self, every: float = _EVERY) -> None:
        self._every = every
        self._worst = 0.0
        self._bins = [0] * (len(LOOP_LAG_BOUNDS) + 1)

    async def run(self) -> None:
        """Wake up every ``every`` seconds until cancelled, noting how late each wake-up came."""
        every = self._every
        clock = time.monotonic
        while True:
            due = clock() + every
            await asyncio.sleep(every)
            late = clock() - due
            self._bins[bisect.bisect_left(LOOP_LAG_BOUNDS, late)] += 1
            if late > self._worst:
                self._worst = late

    def take(self) -> tuple[float, tuple[int, ...]]:
        """The worst lateness in seconds and the counts per bin since the last call; then start over."""
        taken = self._worst, tuple(self._bins)
        self._worst = 0.0
        self._bins = [0] * len(self._bins)
        return taken


def loop_lag_quantile(bins: tuple[int, ...] | list[int], fraction: float) -> float | None:
    """The bound of the bin within which ``fraction`` of the wake-ups came (``inf``: later than every bound).

    ``None`` without wake-ups. A bound, not a value: "p99 <= 5 ms" is what the counts can say.
    """
    total = sum(bins)
    if not total:
        return None
    seen = 0
    for index, count in enumerate(bins):
        seen += count
        if seen >= fraction * total:
            return LOOP_LAG_BOUNDS[index] if index < len(LOOP_LAG_BOUNDS) else float("inf")
    return float("inf")
