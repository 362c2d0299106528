"""The one fold of the event stream: a snapshot and the deltas after it, turned into present state.

Every consumer of the bus folds with :class:`StateFold`: the transports (to rebuild a
snapshot without the session), the headless runner (its counts, lag figures and wait
conditions) and the TUI's views (which read the fold and keep only what they add to it).
Each event kind is handled in one place, so a new event is one new ``case`` and the type
checker (``assert_never``) says which consumer forgot it.

It is cheap per event: a job change rebuilds one record and moves three counters.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, assert_never

from ._events import (
    BackendRecord,
    BreakerChanged,
    CommandAcked,
    Event,
    Heartbeat,
    JobAdded,
    JobChanged,
    JobRecord,
    LagSampled,
    LocalFault,
    OpFinished,
    OpQueued,
    OpRecord,
    OpStarted,
    Rescheduled,
    SessionEnded,
    Snapshot,
    UpdateRejected,
)
from ._model import JobStatus, OpKind, OpState

__all__ = ["BackendFigures", "StateFold", "percentile"]

_SAMPLES: Final = 100_000
"""Lag samples kept per backend (one a second per backend: over a day of a run)."""
_ACKS: Final = 50


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (0 when there are none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(slots=True)
class BackendFigures:
    """What a backend's lag has been over the run, from the events alone."""

    status_lag: deque[float] = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    """Each ``LagSampled``'s status lag."""
    results_lag: deque[float] = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    """Each ``LagSampled``'s results lag (the oldest finished job still waiting for its outputs)."""
    end_to_collected: array[float] = field(default_factory=lambda: array("d"))
    """For each job that went through ``completing``: seconds from the backend's end to its outputs settled.

    One a job, so an array of 8 bytes each, not a deque of floats of 40 (4 MB at 100,000 jobs);
    the oldest go in steps once there are more than ``_SAMPLES``."""

    def collected(self, seconds: float) -> None:
        """A job's outputs settled this long after its backend's end."""
        samples = self.end_to_collected
        samples.append(seconds)
        if len(samples) > _SAMPLES + _SAMPLES // 10:
            del samples[: len(samples) - _SAMPLES]


class StateFold:
    """Jobs, operations, backends and counters, kept current by events.

    The records it holds are frozen and may be shared; the counters are kept as events
    arrive, so reading them costs nothing.

    Args:
        session: the session's name until a snapshot says otherwise.
    """

    def __init__(self, session: str = "") -> None:
        self.session = session
        self.jobs: dict[str, JobRecord] = {}
        self.ops: dict[int, OpRecord] = {}
        self.backends: dict[str, BackendRecord] = {}
        self.counters: dict[str, int] = {}
        self.at = 0.0
        """Time of the last event folded in."""
        self.counts: Counter[JobStatus] = Counter()
        """Jobs per status."""
        self.by_backend: dict[str, Counter[JobStatus]] = {}
        """Jobs per status of each backend."""
        self.by_group: dict[str, Counter[JobStatus]] = {}
        """Jobs per status of each group."""
        self.figures: dict[str, BackendFigures] = {}
        """Each backend's lag history (kept across snapshots)."""
        self.faults: dict[tuple[str | None, str], LocalFault] = {}
        """Local faults not yet cleared, by (backend, what)."""
        self.heartbeat: Heartbeat | None = None
        self.acks: deque[CommandAcked] = deque(maxlen=_ACKS)
        self.ended: str | None = None
        """Why the session ended, once it has."""
        self.events = 0
        """Events folded in."""
        self.snapshots = 0
        """Snapshots folded in (more than one: the stream resynced)."""
        self.collected = 0
        """Jobs whose outputs were settled after ``completing`` (collected, or failed to collect)."""
        self.confirmed_at: dict[str, float] = {}
        """When a poll last confirmed a job's status, where later than its record says."""
        self.next_poll: dict[str, float] = {}
        """When each active job is next polled (``Rescheduled``), where the record does not say."""

    # -- reading -------------------------------------------------------------------------------

    @property
    def total(self) -> int:
        """Jobs known."""
        return len(self.jobs)

    @property
    def final(self) -> int:
        """Jobs in a final status."""
        return sum(n for status, n in self.counts.items() if status.is_final)

    def record(self, job_id: str) -> JobRecord | None:
        """A job's record with its latest confirmation and next poll time folded in."""
        record = self.jobs.get(job_id)
        if record is None:
            return None
        confirmed = self.confirmed_at.get(job_id)
        next_poll = self.next_poll.get(job_id) if record.status.is_active else None
        if (confirmed is None or confirmed <= record.last_confirmed) and (
            next_poll is None or next_poll == record.next_poll_at
        ):
            return record
        return replace(
            record,
            last_confirmed=max(record.last_confirmed, confirmed or 0.0),
            next_poll_at=next_poll if next_poll is not None else record.next_poll_at,
        )

    def last_confirmed(self, job_id: str) -> float:
        """When the job's status was last confirmed (0 when never)."""
        record = self.jobs.get(job_id)
        base = record.last_confirmed if record is not None else 0.0
        return max(base, self.confirmed_at.get(job_id, 0.0))

    def next_poll_at(self, job_id: str) -> float | None:
        """When the session next polls the job, as it published (``None``: not planned or not active)."""
        record = self.jobs.get(job_id)
        if record is None or not record.status.is_active:
            return None
        return self.next_poll.get(job_id, record.next_poll_at)

    def final_states(self) -> dict[str, str]:
        """Each job's status, by id (what tests and audits compare)."""
        return {job_id: record.status.value for job_id, record in self.jobs.items()}

    def figures_of(self, backend: str) -> BackendFigures:
        """A backend's lag history (empty until it has any)."""
        figures = self.figures.get(backend)
        if figures is None:
            figures = self.figures[backend] = BackendFigures()
        return figures

    def snapshot(self, at: float | None = None, *, with_jobs: bool = True) -> Snapshot:
        """The folded state as a snapshot.

        Args:
            at: its time (default: the last event's).
            with_jobs: include the jobs (a transport may carry them separately).
        """
        return Snapshot(
            at=self.at if at is None else at,
            session=self.session,
            jobs=tuple(self._records()) if with_jobs else (),
            ops=tuple(self.ops.values()),
            backends=tuple(self.backends.values()),
            counters=dict(self.counters),
        )

    def _records(self) -> Iterable[JobRecord]:
        if not self.confirmed_at and not self.next_poll:
            return self.jobs.values()
        return [record for job_id in self.jobs if (record := self.record(job_id)) is not None]

    # -- folding -------------------------------------------------------------------------------

    def apply_many(self, events: Iterable[Event]) -> None:
        """Fold several events in, in order."""
        for event in events:
            self.apply(event)

    def reset(self, snapshot: Snapshot) -> None:
        """Start over from a full snapshot (the lag history is kept: it is the run's)."""
        self.session = snapshot.session
        self.jobs = {}
        self.counts = Counter()
        self.by_backend = {}
        self.by_group = {}
        self.confirmed_at = {}
        self.next_poll = {}
        for record in snapshot.jobs:
            self._put(record)
        self.ops = {op.op_id: op for op in snapshot.ops}
        self.backends = {record.name: record for record in snapshot.backends}
        self.counters = dict(snapshot.counters)
        self.ended = None
        self.snapshots += 1

    def apply(self, event: Event) -> None:
        """Fold one event in."""
        self.events += 1
        if event.at > self.at:
            self.at = event.at
        match event:
            case JobChanged():
                self._job_changed(event)
            case OpQueued():
                self.ops[event.op.op_id] = event.op
            case OpStarted():
                op = self.ops.get(event.op_id)
                if op is not None:
                    self.ops[event.op_id] = replace(
                        op, state=OpState.IN_FLIGHT, started_at=event.at, attempt=event.attempt
                    )
            case OpFinished():
                self._op_finished(event)
            case Rescheduled():
                self._rescheduled(event)
            case LagSampled():
                record = event.backend
                self.backends[record.name] = record
                figures = self.figures_of(record.name)
                figures.status_lag.append(record.lag)
                figures.results_lag.append(record.results_lag)
            case JobAdded():
                self._put(event.job)
            case Snapshot():
                self.reset(event)
            case UpdateRejected():
                self.counters["rejections"] = self.counters.get("rejections", 0) + 1
            case BreakerChanged():
                known = self.backends.get(event.backend)
                if known is not None:
                    self.backends[event.backend] = replace(known, breaker=event.state)
            case Heartbeat():
                self.heartbeat = event
            case LocalFault():
                key = (event.backend, event.what)
                if event.cleared:
                    self.faults.pop(key, None)
                else:
                    self.faults[key] = event
            case CommandAcked():
                self.acks.append(event)
            case SessionEnded():
                self.ended = event.reason or "ended"
            case _:
                assert_never(event)

    def _count(self, record: JobRecord, delta: int) -> None:
        status = record.status
        self.counts[status] += delta
        backend = self.by_backend.get(record.backend)
        if backend is None:
            backend = self.by_backend[record.backend] = Counter()
        backend[status] += delta
        group = self.by_group.get(record.group)
        if group is None:
            group = self.by_group[record.group] = Counter()
        group[status] += delta

    def _move(self, record: JobRecord, new: JobStatus) -> None:
        """One job of ``record``'s backend and group moves from its status to ``new`` (the hot path)."""
        old = record.status
        counts = self.counts
        counts[old] -= 1
        counts[new] += 1
        backend = self.by_backend.get(record.backend)
        if backend is None:
            backend = self.by_backend[record.backend] = Counter()
        backend[old] -= 1
        backend[new] += 1
        group = self.by_group.get(record.group)
        if group is None:
            group = self.by_group[record.group] = Counter()
        group[old] -= 1
        group[new] += 1

    def _put(self, record: JobRecord) -> None:
        old = self.jobs.get(record.job_id)
        if old is not None:
            self._count(old, -1)
        self.jobs[record.job_id] = record
        self._count(record, +1)

    def _job_changed(self, event: JobChanged) -> None:
        old = self.jobs.get(event.job_id)
        new = event.new
        if old is None:
            # Not in our snapshot (a stream joined mid-way): the change still tells what we need.
            old = JobRecord(job_id=event.job_id, backend=event.backend, status=event.old)
            self.jobs[event.job_id] = old
            self._count(old, +1)
        record = JobRecord(
            job_id=old.job_id,
            backend=old.backend,
            status=new,
            name=old.name,
            group=old.group,
            backend_id=old.backend_id,
            status_since=event.at,
            last_confirmed=event.at,
            exit_code=event.exit_code if event.exit_code is not None else old.exit_code,
            # A few texts ("Done: Execution Complete") said of many jobs: a decoded stream makes a
            # new string per event, and a viewer keeps one per job. Interned, they are kept once.
            info=sys.intern(event.info),
            next_poll_at=self.next_poll.get(old.job_id, old.next_poll_at) if new.is_active else None,
            poll_interval=old.poll_interval,
            collect_error=event.collect_error,
        )
        self.jobs[event.job_id] = record
        if old.status is not new:
            self._move(old, new)
        self.confirmed_at.pop(event.job_id, None)
        if not new.is_active:
            self.next_poll.pop(event.job_id, None)
        if old.status is JobStatus.COMPLETING and new in (JobStatus.COMPLETED, JobStatus.FAILED) and old.status_since:
            # The record says since when it waited for its outputs: no table of its own (86,000
            # jobs wait in a fetch flood at 100,000).
            self.collected += 1
            self.figures_of(old.backend).collected(max(0.0, event.at - old.status_since))

    def _op_finished(self, event: OpFinished) -> None:
        if event.retry_in is not None:
            op = self.ops.get(event.op_id)
            if op is not None:
                self.ops[event.op_id] = replace(op, state=OpState.QUEUED, started_at=None)
            return
        op = self.ops.pop(event.op_id, None)
        if op is None or op.kind != OpKind.POLL or event.outcome != "done":
            return
        # A poll that answered confirmed every job it asked about, changed or not.
        # Kept beside the records: a record rebuilt per job per poll would cost the viewer dearly.
        confirmed = self.confirmed_at
        jobs = self.jobs
        at = event.at
        for job_id in op.job_ids:
            if job_id in jobs:
                confirmed[job_id] = at

    def _rescheduled(self, event: Rescheduled) -> None:
        jobs = self.jobs
        next_poll = self.next_poll
        at = event.next_poll_at
        for job_id in event.job_ids:
            if job_id in jobs:
                next_poll[job_id] = at
