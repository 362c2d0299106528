"""The present state folded from a snapshot and the deltas after it.

A transport or a replay rebuilds a :class:`~monitor_core.Snapshot` at any point from the
last full snapshot and the deltas that followed, without the session that made them.
"""

from __future__ import annotations

import dataclasses

from .._events import (
    BackendRecord,
    Event,
    JobAdded,
    JobChanged,
    JobRecord,
    LagSampled,
    OpFinished,
    OpQueued,
    OpRecord,
    OpStarted,
    Snapshot,
    UpdateRejected,
)
from .._model import OpState

__all__ = ["StateFold"]


class StateFold:
    """Jobs, queued operations, backends and counters, kept current by events."""

    def __init__(self, session: str = "") -> None:
        self.session = session
        self.jobs: dict[str, JobRecord] = {}
        self.ops: dict[int, OpRecord] = {}
        self.backends: dict[str, BackendRecord] = {}
        self.counters: dict[str, int] = {}
        self.at = 0.0
        """Time of the last event folded in."""

    def reset(self, snapshot: Snapshot) -> None:
        """Start over from a full snapshot."""
        self.session = snapshot.session
        self.jobs = {job.job_id: job for job in snapshot.jobs}
        self.ops = {op.op_id: op for op in snapshot.ops}
        self.backends = {record.name: record for record in snapshot.backends}
        self.counters = dict(snapshot.counters)
        self.at = snapshot.at

    def apply(self, event: Event) -> None:
        """Fold one event in; events that do not change the state are ignored."""
        self.at = max(self.at, event.at)
        if isinstance(event, Snapshot):
            self.reset(event)
        elif isinstance(event, JobAdded):
            self.jobs[event.job.job_id] = event.job
        elif isinstance(event, JobChanged):
            old = self.jobs.get(event.job_id)
            base = old or JobRecord(job_id=event.job_id, backend=event.backend, status=event.new)
            self.jobs[event.job_id] = dataclasses.replace(
                base,
                status=event.new,
                status_since=event.at,
                last_confirmed=event.at,
                info=event.info or base.info,
                exit_code=event.exit_code if event.exit_code is not None else base.exit_code,
            )
        elif isinstance(event, OpQueued):
            self.ops[event.op.op_id] = event.op
        elif isinstance(event, OpStarted):
            op = self.ops.get(event.op_id)
            if op is not None:
                self.ops[event.op_id] = dataclasses.replace(
                    op, state=OpState.IN_FLIGHT, started_at=event.at, attempt=event.attempt
                )
        elif isinstance(event, OpFinished):
            if event.retry_in is None:
                self.ops.pop(event.op_id, None)
        elif isinstance(event, LagSampled):
            self.backends[event.backend.name] = event.backend
        elif isinstance(event, UpdateRejected):
            self.counters["rejections"] = self.counters.get("rejections", 0) + 1

    def snapshot(self, at: float | None = None, *, with_jobs: bool = True) -> Snapshot:
        """The folded state as a snapshot.

        Args:
            at: its time (default: the last event's).
            with_jobs: include the jobs (a transport may carry them separately).
        """
        return Snapshot(
            at=self.at if at is None else at,
            session=self.session,
            jobs=tuple(self.jobs.values()) if with_jobs else (),
            ops=tuple(self.ops.values()),
            backends=tuple(self.backends.values()),
            counters=dict(self.counters),
        )

    def final_states(self) -> dict[str, str]:
        """Each job's status, by id (what tests and audits compare)."""
        return {job_id: record.status.value for job_id, record in self.jobs.items()}
