"""A running count of jobs per status and of each backend's health: the one fold, with two lines of text.

Kept for scripts and tests that print progress; it is :class:`monitor_core.StateFold`.
"""

from __future__ import annotations

from monitor_core import JobStatus, StateFold

__all__ = ["Tally"]


class Tally(StateFold):
    """The one fold, with its counts and lags as text."""

    @property
    def rejections(self) -> int:
        return self.counters.get("rejections", 0)

    def status_line(self) -> str:
        """Jobs per status in Ganga's order, e.g. ``running 12  completed 300``."""
        return "  ".join(f"{status.value} {self.counts[status]}" for status in JobStatus if self.counts[status])

    def lag_line(self) -> str:
        """Each backend's status and results lag, and its breaker, e.g. ``dirac-sim lag 0.4s``."""
        from .headless import _lag_line

        return _lag_line(self)
