"""A long task's share of the event loop: how long it may run before it lets the others in.

A task that works through a burst (a poll's thousand answers, a viewer's backlog of events)
yields when its slice is spent, so a timer due meanwhile (a lane's next poll, a heartbeat)
runs at most a turn of the loop late. The clock is read every few steps only: a step may take
a microsecond, and reading the clock each time would double that.

The slices of one turn of the loop share one budget. In a completion burst a poll's answer,
each viewer's pump and the output fetches all work through backlogs at once; with a whole
slice each, a turn ran 4-5 ms of work, 10-20 ms of wall time on two busy cores, and a timer
due in it waited that long. Each now gets the turn's budget divided by the number of tasks
that used their slice long enough to look at the clock in the turn before, so a turn's work
stays near one budget however many tasks are busy, and each still gets its share of every
turn.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Final

__all__ = ["SLICE_SECONDS", "TimeSlice"]

SLICE_SECONDS: Final = 0.0005
"""Loop time the slices of one turn of the loop may take together.

A timer can wait for the rest of one turn and the ready tasks of the next, each stretched two
or three times on two busy cores. In the 100,000-job demo's completion burst, wake-ups over
10 ms late were 3.4 % of all with 2 ms a turn, 1.5 % with 1 ms, 0.8 % with 0.5 ms (the target
is a p99 within 10 ms); the status lag and the keys did not change."""
_SMALLEST_SHARE: Final = 0.0002
"""However many tasks share a turn, each gets this much: below it, yielding costs more than the work."""


class _Turn:
    """Which tasks took a slice in the present turn of a loop, and how many did in the one before."""

    __slots__ = ("__weakref__", "_loop", "_open", "before", "takers")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._open = False
        self.takers = 0
        self.before = 1
        """Never 0: a turn is closed only after a slice was taken in it."""

    def take(self) -> int:
        """One more slice in this turn; how many tasks to share the budget with."""
        if not self._open:
            self._open = True
            # Runs at the start of the next turn, before the tasks that yield after this call.
            self._loop.call_soon(self._close)
        self.takers += 1
        return self.before

    def _close(self) -> None:
        self.before, self.takers, self._open = self.takers, 0, False


_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turn] = weakref.WeakKeyDictionary()


def _share(seconds: float) -> float:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return seconds
    turn = _turns.get(loop)
    if turn is None:
        turn = _turns[loop] = _Turn(loop)
    return max(min(seconds, _SMALLEST_SHARE), seconds / turn.take())


class TimeSlice:
    """Loop time a task may use between two yields, counted from the last one.

    Args:
        seconds: the budget of one turn of the loop, shared by the tasks that take slices in it.
        check_every: steps between two readings of the clock.
    """

    __slots__ = ("_check_every", "_limit", "_seconds", "_started", "_steps")

    def __init__(self, seconds: float = SLICE_SECONDS, *, check_every: int = 16) -> None:
        self._seconds = seconds
        self._check_every = max(1, check_every)
        self._limit: float | None = None
        self._started = time.perf_counter()
        self._steps = 0

    def restart(self) -> None:
        """Count the slice from now (the task has just been given the loop)."""
        self._limit = None
        self._started = time.perf_counter()
        self._steps = 0

    def spent(self) -> bool:
        """One more step done: True once the slice is used up (read every ``check_every`` steps)."""
        self._steps += 1
        if self._steps < self._check_every:
            return False
        self._steps = 0
        limit = self._limit
        if limit is None:
            # A task shares the turn once it has worked long enough to look at the clock: one
            # woken for a step or two (a planner with one batch, a pump with one event) leaves
            # the busy ones their whole share.
            limit = self._limit = _share(self._seconds)
        return time.perf_counter() - self._started > limit

    async def yield_to_loop(self) -> None:
        """Let every other ready task and due timer run, then start a new slice."""
        await asyncio.sleep(0)
        self.restart()
