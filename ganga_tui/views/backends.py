"""Backend health over the one fold: the latest record of each backend, and its recent lag history.

Two lags per backend, side by side: status lag (how overdue the stalest active job's poll is)
and results lag (how long the oldest finished job has waited for its outputs).
"""

from __future__ import annotations

from collections import deque
from typing import Final

from monitor_core import BackendRecord, StateFold

__all__ = ["BackendsView"]

_HISTORY: Final = 60
"""Samples kept per backend for its sparklines."""


class BackendsView:
    """Each backend's latest health, read from the fold, and the history the sparklines draw."""

    def __init__(self, fold: StateFold) -> None:
        self._fold = fold
        self.lag_history: dict[str, deque[float]] = {}
        self.results_history: dict[str, deque[float]] = {}
        self._collect_plan: dict[str, float] = {}
        self.generation = 0

    @property
    def records(self) -> dict[str, BackendRecord]:
        """The latest record of each backend (the fold's)."""
        return self._fold.backends

    def sampled(self, record: BackendRecord) -> None:
        """A new health sample arrived."""
        for histories, value in ((self.lag_history, record.lag), (self.results_history, record.results_lag)):
            history = histories.get(record.name)
            if history is None:
                history = histories[record.name] = deque(maxlen=_HISTORY)
            history.append(value)
        bound = record.collect_bound
        if bound is not None:
            # The bound shrinks as the queue drains; a job queued at its peak is on plan until the peak is spent.
            peak = self._collect_plan.get(record.name, 0.0)
            self._collect_plan[record.name] = 0.0 if bound == 0 else max(bound, peak)
        self.generation += 1

    def changed(self) -> None:
        """Something shown beside the backends changed (a breaker, a fault, the connection)."""
        self.generation += 1

    def is_lagging(self, backend: str) -> bool:
        """Whether a backend's status lag is beyond its target (one poll interval overdue)."""
        record = self._fold.backends.get(backend)
        return record is not None and record.poll_interval > 0 and record.lag > record.poll_interval

    def collect_plan(self, backend: str) -> float:
        """Seconds a finished job of ``backend`` may wait for its outputs within the plan.

        The longest collect bound since the backend's fetch queue was last empty: the bound
        falls as the queue drains, but a job queued when it was longest may wait all of it.
        """
        record = self._fold.backends.get(backend)
        now = record.collect_bound if record is not None and record.collect_bound else 0.0
        return max(now, self._collect_plan.get(backend, 0.0))

    def collect_bound(self) -> float | None:
        """The best possible seconds to collect every queued output (the slowest backend's bound)."""
        bounds = [record.collect_bound for record in self._fold.backends.values() if record.collect_bound is not None]
        return max(bounds) if bounds else None
