"""One clock convention: monotonic seconds inside the scheduler, wall-clock seconds at its edges.

Due times, call times and latencies are monotonic, so a clock step cannot reorder them; what
leaves the process (events, the store) carries wall-clock times. The conversion happens here
and nowhere else.
"""

from __future__ import annotations

import time

__all__ = ["Clock"]


class Clock:
    """Reads both clocks and converts between them with one offset taken at creation."""

    __slots__ = ("_offset",)

    def __init__(self) -> None:
        self._offset = time.time() - time.monotonic()

    @staticmethod
    def now() -> float:
        """Monotonic seconds: the scheduler's own time."""
        return time.monotonic()

    def wall_now(self) -> float:
        """Wall-clock seconds, consistent with :meth:`to_wall` of :meth:`now`."""
        return time.monotonic() + self._offset

    def to_wall(self, monotonic: float) -> float:
        """Wall-clock time of a monotonic instant."""
        return monotonic + self._offset

    def to_monotonic(self, wall: float) -> float:
        """Monotonic instant of a wall-clock time (e.g. a stored job's ``status_since``)."""
        return wall - self._offset
