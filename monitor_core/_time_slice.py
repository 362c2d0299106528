"""A long task's share of the event loop: how long it may run before it lets the others in.

A task that works through a burst (a poll's thousand answers, a viewer's backlog of events)
yields when its slice is spent, so a timer due meanwhile (a lane's next poll, a heartbeat)
runs at most a slice late. The clock is read every few steps only: a step may take a
microsecond, and reading the clock each time would double that.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

__all__ = ["SLICE_SECONDS", "TimeSlice"]

SLICE_SECONDS: Final = 0.002
"""Loop time a task may take between two yields: a fifth of the 10 ms the loop's lag is held to,
as several busy tasks can each take a slice in one turn of the loop."""


class TimeSlice:
    """Loop time a task may use between two yields, counted from the last one.

    Args:
        seconds: the slice.
        check_every: steps between two readings of the clock.
    """

    __slots__ = ("_check_every", "_seconds", "_started", "_steps")

    def __init__(self, seconds: float = SLICE_SECONDS, *, check_every: int = 16) -> None:
        self._seconds = seconds
        self._check_every = max(1, check_every)
        self._started = time.perf_counter()
        self._steps = 0

    def restart(self) -> None:
        """Count the slice from now (the task has just been given the loop)."""
        self._started = time.perf_counter()
        self._steps = 0

    def spent(self) -> bool:
        """One more step done: True once the slice is used up (read every ``check_every`` steps)."""
        self._steps += 1
        if self._steps < self._check_every:
            return False
        self._steps = 0
        return time.perf_counter() - self._started > self._seconds

    async def yield_to_loop(self) -> None:
        """Let every other ready task and due timer run, then start a new slice."""
        await asyncio.sleep(0)
        self.restart()
