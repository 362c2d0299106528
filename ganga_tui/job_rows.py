"""What the TUI keeps of each job, operation and group: plain rows with no Textual import."""

from __future__ import annotations

import enum
import statistics
from array import array
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from monitor_core import JobRecord, JobStatus, OpKind

__all__ = [
    "NO_WARNINGS",
    "TEXT_ID",
    "GroupStats",
    "JobRow",
    "OpView",
    "Transition",
    "WarningKind",
    "id_key",
    "warning_set",
]

TEXT_ID: Final = 1 << 62
"""``JobRow.id_number`` of an id that is not a number (it sorts after every number)."""
_RATE_WINDOW: Final = 120.0
"""Seconds of completions the ETA is estimated from."""


class WarningKind(enum.StrEnum):
    """Why a job needs a look."""

    UNCONFIRMED = "unconfirmed"
    """Active, but its status has not been confirmed for k times its poll interval."""
    STUCK = "stuck"
    """Running (or in a status other than queued or completing) far longer than 9 in 10 of its group stayed in it."""
    BACKEND_DONE = "backend_done"
    """The backend said it finished, and the session has not settled it within its fetch plan."""
    COLLECT_FAILED = "collect_failed"
    """Its outputs could not be collected after every attempt (``c`` retries)."""

    @property
    def mark(self) -> str:
        """One character shown in the job table."""
        return _MARKS[self]

    @property
    def explanation(self) -> str:
        """What the warning means, for the warnings view."""
        return _EXPLANATIONS[self]


_MARKS: Final = {
    WarningKind.UNCONFIRMED: "?",
    WarningKind.STUCK: "!",
    WarningKind.BACKEND_DONE: "≠",
    WarningKind.COLLECT_FAILED: "c",
}
_EXPLANATIONS: Final = {
    WarningKind.UNCONFIRMED: "status not confirmed for k x its poll interval, past its planned poll",
    WarningKind.STUCK: "running (or another status it should soon leave) far beyond its group's usual time",
    WarningKind.BACKEND_DONE: "backend says done, outputs still not collected past the fetch plan",
    WarningKind.COLLECT_FAILED: "outputs could not be collected (c retries)",
}


NO_WARNINGS: Final[frozenset[WarningKind]] = frozenset()
_WARNING_SETS: dict[frozenset[WarningKind], frozenset[WarningKind]] = {NO_WARNINGS: NO_WARNINGS}


def warning_set(kinds: Iterable[WarningKind]) -> frozenset[WarningKind]:
    """The one shared set of these warnings.

    There are sixteen, and a row keeps the set it was last given: without sharing, every job
    whose warning came and went held an empty set of its own, 216 bytes (19 MB at 100,000 jobs).
    """
    found = frozenset(kinds)
    return _WARNING_SETS.setdefault(found, found)


def id_key(job_id: str) -> tuple[int, str]:
    """How a job id sorts: numeric ids as numbers, the rest after them as text."""
    return (int(job_id), "") if job_id.isdigit() else (TEXT_ID, job_id)


@dataclass(slots=True)
class JobRow:
    """One job as the table shows it: the fold's record of it, and what the table adds.

    ``version`` changes whenever what it shows changes. The record's fields are read through
    it, not copied: a copy of eleven of them cost 64 bytes a job (6 MB at 100,000 jobs).
    """

    record: JobRecord
    last_confirmed: float = 0.0
    """The later of the record's and the fold's last confirmation by a poll."""
    next_poll_at: float | None = None
    polling: bool = False
    """An operation is asking the backend about this job right now."""
    warnings: frozenset[WarningKind] = NO_WARNINGS
    version: int = 0
    order: int = 0
    """Arrival position, the tie-breaker of every sort."""
    id_number: int = 0
    """The id as a number, or ``TEXT_ID`` when it is not one (an int, not a key tuple: 56 bytes a job less)."""
    view_mark: int = 0
    """The number of the last filtered view that held this row (see :class:`~ganga_tui.views.jobs.JobsView`)."""
    history: bytes = b""
    """The job's latest transitions, packed (see :class:`~ganga_tui.views.history.Histories`)."""

    def __post_init__(self) -> None:
        self.id_number = id_key(self.record.job_id)[0]

    @property
    def job_id(self) -> str:
        return self.record.job_id

    @property
    def backend(self) -> str:
        return self.record.backend

    @property
    def status(self) -> JobStatus:
        return self.record.status

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def group(self) -> str:
        return self.record.group

    @property
    def status_since(self) -> float:
        return self.record.status_since

    @property
    def exit_code(self) -> int | None:
        return self.record.exit_code

    @property
    def info(self) -> str:
        return self.record.info

    @property
    def collect_error(self) -> str | None:
        """Why the outputs could not be collected, when they could not."""
        return self.record.collect_error

    @property
    def id_key(self) -> tuple[int, str]:
        """Numeric ids sort as numbers, the rest after them as text."""
        number = self.id_number
        return (number, "") if number != TEXT_ID else (number, self.record.job_id)


@dataclass(frozen=True, slots=True)
class Transition:
    """One step of a job's state history."""

    at: float
    old: JobStatus | None
    new: JobStatus
    source: str
    info: str = ""


@dataclass(slots=True)
class OpView:
    """A monitoring operation as the queue and job details show it."""

    op_id: int
    kind: OpKind
    backend: str
    job_ids: tuple[str, ...]
    enqueued_at: float
    state: str = "queued"
    """queued, in_flight, retrying, done, error, timeout, cancelled or rejected."""
    attempt: int = 1
    started_at: float | None = None
    finished_at: float | None = None
    latency: float | None = None
    error: str | None = None
    detail: str = ""
    """How the backend answered, when it says."""
    changed: int = 0
    version: int = 0

    @property
    def finished(self) -> bool:
        """The operation will not run again."""
        return self.finished_at is not None


@dataclass(slots=True)
class GroupStats:
    """A job group's progress and its usual time in each status."""

    name: str
    counts: Counter[JobStatus] = field(default_factory=Counter)
    finished_at: deque[float] = field(default_factory=lambda: deque(maxlen=5000))
    durations: dict[JobStatus, array[float]] = field(default_factory=dict)
    """The latest times jobs spent in each status, taken as they left it: 8 bytes each in an
    array, where a deque of floats took 40 (9 MB of 230,000 of them in a 100,000-job flood)."""
    left: Counter[JobStatus] = field(default_factory=Counter)
    """How many jobs have left each status (``durations`` keeps only the latest times)."""

    @property
    def total(self) -> int:
        """Jobs in the group."""
        return sum(self.counts.values())

    @property
    def final(self) -> int:
        """Jobs in a final status."""
        return sum(n for status, n in self.counts.items() if status.is_final)

    def usual_time(self, status: JobStatus) -> float | None:
        """Seconds within which 9 in 10 of the group's jobs left ``status``, once 9 in 10 have left it.

        Not the median: waits in a queue spread widely (exponentially, on a grid), and four times
        the median flagged one job in fifty that was only unlucky in its site's queue. Not before
        most have left either: the first to leave are the quick ones, and a p90 of them alone
        flagged jobs 25 s into a queue whose waits average 4 s.
        """
        samples = self.durations.get(status)
        if samples is None or len(samples) < 5 or self.left[status] < 9 * self.counts[status]:
            return None
        return statistics.quantiles(samples, n=10, method="inclusive")[-1]

    def rate(self, now: float) -> float:
        """Jobs finishing per second lately (0 when unknown)."""
        # Newest last: walk back only over the window, not the whole deque.
        cutoff = now - _RATE_WINDOW
        count = 0
        first = now
        for t in reversed(self.finished_at):
            if t < cutoff:
                break
            count += 1
            first = t
        if count < 2:
            return 0.0
        span = max(now - first, 1.0)
        return count / span

    def eta(self, now: float) -> float | None:
        """Seconds until every job is final at the recent completion rate, or ``None``."""
        remaining = self.total - self.final
        if remaining == 0:
            return 0.0
        rate = self.rate(now)
        return remaining / rate if rate > 0 else None
