"""Jobs, Ganga's job state machine, and monitoring operations."""

from __future__ import annotations

import enum
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "TRANSITIONS",
    "IllegalTransition",
    "Job",
    "JobSpec",
    "JobStatus",
    "OpKind",
    "OpState",
    "Operation",
    "Outcome",
    "check_transition",
    "is_legal_transition",
]


class JobStatus(enum.StrEnum):
    """A job's status, with the names and meaning Ganga gives them."""

    NEW = "new"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    RUNNING = "running"
    COMPLETING = "completing"
    COMPLETED = "completed"
    FAILED = "failed"
    KILLED = "killed"
    UNKNOWN = "unknown"
    INCOMPLETE = "incomplete"
    REMOVED = "removed"
    TEMPLATE = "template"

    @property
    def is_final(self) -> bool:
        """True when monitoring has nothing more to learn about the job."""
        return self in FINAL_STATUSES

    @property
    def is_active(self) -> bool:
        """True when the job's backend must be polled for news."""
        return self in ACTIVE_STATUSES


_S = JobStatus

#: Ganga's ``Job.status_graph``: from each status, the statuses a job may move to.
#: Staying in the same status is always allowed and is not a transition.
TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    _S.NEW: frozenset({_S.SUBMITTING, _S.REMOVED}),
    _S.SUBMITTING: frozenset({_S.NEW, _S.SUBMITTED, _S.UNKNOWN, _S.FAILED}),
    _S.SUBMITTED: frozenset({_S.RUNNING, _S.KILLED, _S.UNKNOWN, _S.FAILED, _S.COMPLETING, _S.COMPLETED, _S.SUBMITTING}),
    _S.RUNNING: frozenset({_S.COMPLETING, _S.COMPLETED, _S.FAILED, _S.KILLED, _S.UNKNOWN, _S.SUBMITTING, _S.SUBMITTED}),
    _S.COMPLETING: frozenset({_S.COMPLETED, _S.FAILED, _S.UNKNOWN, _S.SUBMITTING, _S.SUBMITTED}),
    _S.KILLED: frozenset({_S.REMOVED, _S.FAILED, _S.SUBMITTING, _S.SUBMITTED}),
    _S.FAILED: frozenset({_S.REMOVED, _S.SUBMITTING, _S.COMPLETED, _S.SUBMITTED}),
    _S.COMPLETED: frozenset({_S.REMOVED, _S.FAILED, _S.SUBMITTING, _S.SUBMITTED}),
    _S.INCOMPLETE: frozenset({_S.REMOVED}),
    _S.UNKNOWN: frozenset({_S.REMOVED}),
    _S.TEMPLATE: frozenset({_S.REMOVED}),
    _S.REMOVED: frozenset(),
}

FINAL_STATUSES: frozenset[JobStatus] = frozenset(
    {_S.COMPLETED, _S.FAILED, _S.KILLED, _S.UNKNOWN, _S.INCOMPLETE, _S.REMOVED}
)
"""Statuses a job reaches at the end of its life. Ganga can resubmit such a job, but
monitoring never moves it on by itself."""

ACTIVE_STATUSES: frozenset[JobStatus] = frozenset({_S.SUBMITTED, _S.RUNNING})
"""Statuses whose jobs are polled. A ``completing`` job waits for its output fetch instead."""


class IllegalTransition(ValueError):
    """A status change that Ganga's state machine forbids."""

    def __init__(self, job_id: str, old: JobStatus, new: JobStatus) -> None:
        super().__init__(f"job {job_id}: illegal transition {old} -> {new}")
        self.job_id = job_id
        self.old = old
        self.new = new


def is_legal_transition(old: JobStatus, new: JobStatus) -> bool:
    """Whether a job may move from ``old`` to ``new`` (the same status counts as legal)."""
    return old == new or new in TRANSITIONS[old]


def check_transition(job_id: str, old: JobStatus, new: JobStatus) -> None:
    """Raise :class:`IllegalTransition` unless ``old -> new`` is legal.

    Raises:
        IllegalTransition: the state machine forbids the move.
    """
    if not is_legal_transition(old, new):
        raise IllegalTransition(job_id, old, new)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What to run, before it has a backend id: the input of a submission.

    ``expected`` is the outcome the workload intends (used by simulations and audits to
    check that monitoring reported the truth); real jobs leave it ``None``.
    """

    name: str
    backend: str
    group: str = ""
    command: tuple[str, ...] = ()
    duration: float = 0.0
    exit_code: int = 0
    expected: JobStatus | None = None


@dataclass(slots=True)
class Job:
    """A job as the monitor tracks it.

    Times are wall-clock seconds since the epoch, so they mean the same thing in every
    process that sees the job over the bus.
    """

    job_id: str
    backend: str
    name: str = ""
    group: str = ""
    backend_id: str | None = None
    status: JobStatus = JobStatus.NEW
    status_since: float = 0.0
    last_confirmed: float = 0.0
    """When the backend last told us the job's status, changed or not."""
    exit_code: int | None = None
    expected: JobStatus | None = None
    outcome: JobStatus | None = None
    """The final status a ``completing`` job will take once its output is fetched."""
    info: str = ""
    """The backend's own words for the status (e.g. DIRAC's ``Stalled``)."""
    collect_error: str | None = None
    """Why the outputs could not be collected after every attempt; ``None`` otherwise."""


class OpKind(enum.StrEnum):
    """What a monitoring operation does."""

    POLL = "poll"
    FETCH_OUTPUT = "fetch_output"
    KILL = "kill"


class OpState(enum.StrEnum):
    """Where a monitoring operation is in its life."""

    QUEUED = "queued"
    IN_FLIGHT = "in_flight"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


Outcome = Literal["done", "error", "timeout", "cancelled", "rejected"]
"""How one attempt of an operation ended."""

_op_ids = itertools.count(1)


@dataclass(slots=True)
class Operation:
    """One call the monitor makes, or will make, to a backend for a batch of jobs."""

    kind: OpKind
    backend: str
    job_ids: tuple[str, ...]
    priority: int = 10
    """Lower runs first; a user's "refresh now" uses 0."""
    op_id: int = field(default_factory=lambda: next(_op_ids))
    state: OpState = OpState.QUEUED
    enqueued_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    attempt: int = 1
    error: str | None = None
    oldest_due: float = 0.0
    """Monotonic due time of the stalest job in the batch, for the lane's lag."""
