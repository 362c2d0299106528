"""Typed events on the bus: immutable facts about jobs, operations and backends.

Every event is a frozen dataclass whose class name is its wire name. Times (``at`` and
the other ``*_at`` fields) are wall-clock seconds since the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from ._model import Job, JobStatus, Operation, OpKind, OpState, Outcome

__all__ = [
    "BackendRecord",
    "BreakerChanged",
    "BreakerState",
    "ChangeSource",
    "CommandAcked",
    "Event",
    "Heartbeat",
    "JobAdded",
    "JobChanged",
    "JobRecord",
    "LagSampled",
    "LocalFault",
    "OpFinished",
    "OpQueued",
    "OpRecord",
    "OpStarted",
    "RejectionCategory",
    "Rescheduled",
    "SessionEnded",
    "Snapshot",
    "UpdateRejected",
    "job_record",
    "op_record",
]

BreakerState = Literal["closed", "open", "half_open"]
ChangeSource = Literal["poll", "event", "fetch", "user", "restore", "submit"]
RejectionCategory = Literal["illegal_transition", "garbage", "unknown_job", "unknown_state"]


@dataclass(slots=True)
class JobRecord:
    """What a subscriber needs to know of one job. Read-only by convention, like every event.

    Not a frozen dataclass: a frozen one takes six times as long to make, and a session makes
    one per job for every job it adopts and for every snapshot (100,000 at a time).
    """

    job_id: str
    backend: str
    status: JobStatus
    name: str = ""
    group: str = ""
    backend_id: str | None = None
    status_since: float = 0.0
    last_confirmed: float = 0.0
    exit_code: int | None = None
    info: str = ""
    next_poll_at: float | None = None
    poll_interval: float | None = None
    collect_error: str | None = None
    """Why the outputs could not be collected after every attempt (a manual retry may still collect them)."""


def job_record(job: Job, *, next_poll_at: float | None = None, poll_interval: float | None = None) -> JobRecord:
    """Freeze a :class:`Job` into a :class:`JobRecord`."""
    # Positional, in the record's field order: a snapshot makes 100,000 of these on the loop,
    # and keywords cost a quarter of the time.
    return JobRecord(
        job.job_id,
        job.backend,
        job.status,
        job.name,
        job.group,
        job.backend_id,
        job.status_since,
        job.last_confirmed,
        job.exit_code,
        job.info,
        next_poll_at,
        poll_interval,
        job.collect_error,
    )


@dataclass(frozen=True, slots=True)
class OpRecord:
    """A monitoring operation as a subscriber sees it."""

    op_id: int
    kind: OpKind
    backend: str
    job_ids: tuple[str, ...]
    state: OpState
    enqueued_at: float
    priority: int = 10
    attempt: int = 1
    started_at: float | None = None


def op_record(op: Operation, *, enqueued_wall: float, started_wall: float | None = None) -> OpRecord:
    """Freeze an :class:`Operation` with wall-clock times for subscribers."""
    return OpRecord(
        op_id=op.op_id,
        kind=op.kind,
        backend=op.backend,
        job_ids=op.job_ids,
        state=op.state,
        enqueued_at=enqueued_wall,
        priority=op.priority,
        attempt=op.attempt,
        started_at=started_wall,
    )


@dataclass(frozen=True, slots=True)
class BackendRecord:
    """A backend lane's health: how busy it is, and how far behind."""

    name: str
    active_jobs: int = 0
    queued_ops: int = 0
    in_flight: int = 0
    """Status calls in flight, against ``concurrency_limit``."""
    concurrency_limit: int = 1
    fetches_in_flight: int = 0
    """Output fetches in flight, against ``fetch_limit`` (they never take a status-call slot)."""
    fetch_limit: int = 0
    max_batch: int = 1
    lag: float = 0.0
    """Seconds the stalest active job is overdue for a status confirmation (0 = on time)."""
    poll_interval: float = 0.0
    breaker: BreakerState = "closed"
    paused: bool = False
    calls_per_minute: float = 0.0
    max_calls_per_minute: float | None = None
    error_rate: float = 0.0
    """Share of the last calls that failed or timed out."""
    last_latency: float | None = None
    calls_total: int = 0
    retries_total: int = 0
    rejections_total: int = 0
    results_lag: float = 0.0
    """Seconds the oldest job this backend reported finished has waited for its outputs (0 = none waiting)."""
    fetches_queued: int = 0
    """Output fetches waiting for a slot."""
    collect_bound: float | None = None
    """Best possible seconds to collect every queued output at the rate the service's allowance permits."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobAdded:
    """The monitor started tracking a job."""

    at: float
    job: JobRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class JobChanged:
    """A job moved from one status to another (never dropped by the bus)."""

    at: float
    job_id: str
    backend: str
    old: JobStatus
    new: JobStatus
    source: ChangeSource
    info: str = ""
    exit_code: int | None = None
    op_id: int | None = None
    collect_error: str | None = None
    """Set when the move is ``completing -> failed`` because the outputs could not be collected."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OpQueued:
    """An operation was planned and waits for a free slot (again, on a retry)."""

    at: float
    op: OpRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class OpStarted:
    """An operation's call to its backend began."""

    at: float
    op_id: int
    backend: str
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class OpFinished:
    """An operation's attempt ended; ``retry_in`` is set when it will run again."""

    at: float
    op_id: int
    backend: str
    kind: OpKind
    outcome: Outcome
    latency: float = 0.0
    error: str | None = None
    retry_in: float | None = None
    changed: int = 0
    """How many jobs changed status because of this attempt."""
    detail: str = ""
    """How the backend answered, when it says (a DiracX poll: read in full or confirmed by a delta)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateRejected:
    """A backend said something the monitor refused to believe."""

    at: float
    backend: str
    job_id: str | None
    category: RejectionCategory
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LagSampled:
    """A periodic sample of one backend lane's health and lag."""

    at: float
    backend: BackendRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerChanged:
    """A lane's circuit breaker opened, half-opened or closed."""

    at: float
    backend: str
    state: BreakerState
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """The monitor is alive; totals let a viewer check it missed nothing."""

    at: float
    seq: int
    jobs_total: int
    jobs_active: int
    jobs_final: int
    loop_lag: float = 0.0
    """The longest the session's loop ran late since the previous heartbeat, in seconds (0 when not measured)."""
    loop_lag_bins: tuple[int, ...] = ()
    """Wake-ups of the loop's probe since the previous heartbeat, counted per bin of lateness
    (``LOOP_LAG_BOUNDS``, then later than all of them); empty when not measured."""
    jobs_by_status: dict[str, int] = field(default_factory=dict)
    """Jobs in each status (statuses with none left out): a reader of heartbeats alone can follow
    the run's progress (``--events Heartbeat``) without the session sending every job change."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalFault:
    """A fault on this machine (disk full, I/O or permission error) kept monitoring from saving or collecting.

    ``backend`` names the lane that backs off because of it, or is ``None`` for the session's store.
    ``cleared`` is True once the operation that failed has succeeded again.
    """

    at: float
    backend: str | None
    what: str
    error: str
    cleared: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Rescheduled:
    """These jobs of one backend are next polled at ``next_poll_at`` (wall clock; the adaptive interval).

    Rebuildable from a snapshot, so the bus may coalesce or drop it for a slow subscriber.
    """

    at: float
    backend: str
    next_poll_at: float
    job_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandAcked:
    """A viewer's command was carried out, or refused with a reason."""

    at: float
    command_id: str
    ok: bool
    message: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEnded:
    """The monitoring session is shutting down; no event follows."""

    at: float
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """The whole present state; a subscriber's first event, and its way to resync."""

    at: float
    session: str
    jobs: tuple[JobRecord, ...] = ()
    ops: tuple[OpRecord, ...] = ()
    backends: tuple[BackendRecord, ...] = ()
    counters: dict[str, int] = field(default_factory=dict)


Event: TypeAlias = (
    Snapshot
    | JobAdded
    | JobChanged
    | OpQueued
    | OpStarted
    | OpFinished
    | UpdateRejected
    | LagSampled
    | BreakerChanged
    | Heartbeat
    | Rescheduled
    | LocalFault
    | CommandAcked
    | SessionEnded
)
