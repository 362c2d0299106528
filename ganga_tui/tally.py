"""A running count of jobs per status and of each backend's health, built from bus events.

Plain Python with no Textual import: the headless reporter and the TUI share it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from monitor_core import (
    BackendRecord,
    Event,
    JobAdded,
    JobChanged,
    JobStatus,
    LagSampled,
    SessionEnded,
    Snapshot,
    UpdateRejected,
)

__all__ = ["Tally"]


@dataclass(slots=True)
class Tally:
    """Jobs per status, backends' latest health, and a few totals."""

    status_of: dict[str, JobStatus] = field(default_factory=dict)
    counts: Counter[JobStatus] = field(default_factory=Counter)
    backends: dict[str, BackendRecord] = field(default_factory=dict)
    rejections: int = 0
    events: int = 0
    session: str = ""
    ended: str | None = None

    @property
    def total(self) -> int:
        """Jobs known."""
        return len(self.status_of)

    @property
    def final(self) -> int:
        """Jobs in a final status."""
        return sum(n for status, n in self.counts.items() if status.is_final)

    def _set(self, job_id: str, status: JobStatus) -> None:
        old = self.status_of.get(job_id)
        if old is not None:
            self.counts[old] -= 1
        self.status_of[job_id] = status
        self.counts[status] += 1

    def apply(self, event: Event) -> None:
        """Fold one event in. Events are idempotent after a resync snapshot."""
        self.events += 1
        if isinstance(event, Snapshot):
            self.session = event.session
            self.status_of.clear()
            self.counts.clear()
            for job in event.jobs:
                self._set(job.job_id, job.status)
            self.backends = {record.name: record for record in event.backends}
            self.rejections = event.counters.get("rejections", self.rejections)
        elif isinstance(event, JobAdded):
            self._set(event.job.job_id, event.job.status)
        elif isinstance(event, JobChanged):
            self._set(event.job_id, event.new)
        elif isinstance(event, LagSampled):
            self.backends[event.backend.name] = event.backend
        elif isinstance(event, UpdateRejected):
            self.rejections += 1
        elif isinstance(event, SessionEnded):
            self.ended = event.reason or "ended"

    def status_line(self) -> str:
        """Jobs per status in Ganga's order, e.g. ``running 12  completed 300``."""
        return "  ".join(f"{status.value} {self.counts[status]}" for status in JobStatus if self.counts[status])

    def lag_line(self) -> str:
        """Each backend's lag and breaker, e.g. ``dirac-sim lag 0.4s``."""
        parts = []
        for record in self.backends.values():
            flag = "" if record.breaker == "closed" else f" breaker {record.breaker}"
            paused = " paused" if record.paused else ""
            parts.append(f"{record.name} lag {record.lag:.1f}s{flag}{paused}")
        return "  ".join(parts)
