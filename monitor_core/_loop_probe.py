"""How late the session's event loop runs what is due: the figure behind "the loop never blocks".

Status lag says how stale the jobs are; this says how long anything waiting on the loop (a
viewer's snapshot, a command, a poll's answer) waited for its turn. A task due every few
milliseconds notes how late it woke; the worst since the last heartbeat goes out with it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

__all__ = ["LoopLagProbe"]

_EVERY: Final = 0.01


class LoopLagProbe:
    """The worst lateness of a wake-up due every ``every`` seconds, since it was last taken.

    Args:
        every: seconds between wake-ups; a stall shorter than this can go unseen.
    """

    __slots__ = ("_every", "_worst")

    def __init__(self, every: float = _EVERY) -> None:
        self._every = every
        self._worst = 0.0

    async def run(self) -> None:
        """Wake up every ``every`` seconds until cancelled, noting how late each wake-up came."""
        every = self._every
        clock = time.monotonic
        while True:
            due = clock() + every
            await asyncio.sleep(every)
            late = clock() - due
            if late > self._worst:
                self._worst = late

    def take(self) -> float:
        """The worst lateness in seconds since the last call, and start over."""
        worst, self._worst = self._worst, 0.0
        return worst
