"""Observe mode: Ganga's own monitoring loop runs, and the bus shows what it does.

Jobs and every status change come from the status hook; Ganga's update calls become
operations (queued, started, finished, with their latency and error); each backend's lag is
how far past Ganga's own poll rate its stalest active job has gone unconfirmed. A backend
that Ganga's loop forgot to poll therefore shows a lag that only grows.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .._bus import EventBus
from .._events import (
    BackendRecord,
    Heartbeat,
    JobAdded,
    JobChanged,
    LagSampled,
    OpFinished,
    OpQueued,
    OpRecord,
    OpStarted,
    SessionEnded,
    Snapshot,
    UpdateRejected,
    job_record,
)
from .._health import LaneHealth
from .._model import Job, OpKind, OpState
from ._changes import StatusChange, ganga_status, job_from_change

__all__ = ["ObservedSession"]


@dataclass(slots=True)
class _BackendView:
    name: str
    in_flight: int = 0
    health: LaneHealth = field(default_factory=LaneHealth)
    """The same call counting, error rate and lag sampling as the scheduler's lanes."""
    started: dict[int, float] = field(default_factory=dict)
    fetches_in_flight: int = 0
    awaiting_outputs: dict[str, float] = field(default_factory=dict)
    """Jobs whose finalisation Ganga has started, since when (their outputs are not in the session yet)."""


class ObservedSession:
    """The bus's picture of a Ganga session whose own loop monitors it (loop thread only).

    Args:
        bus: where events go.
        session: the session's name on the bus.
        poll_rate: Ganga's poll rate of a backend, in seconds.
        concurrency: how many update calls Ganga runs at once.
        ganga_enabled: whether Ganga's monitoring loop is on.
        sample_every: seconds between lag samples.
    """

    def __init__(
        self,
        bus: EventBus,
        session: str,
        *,
        poll_rate: Callable[[str], float],
        concurrency: int,
        ganga_enabled: Callable[[], bool],
        sample_every: float = 1.0,
    ) -> None:
        self.bus = bus
        self.session = session
        self.jobs: dict[str, Job] = {}
        self.masters: set[str] = set()
        self.outputdirs: dict[str, str] = {}
        self.counters: Counter[str] = Counter()
        self._poll_rate = poll_rate
        self._concurrency = concurrency
        self._ganga_enabled = ganga_enabled
        self._sample_every = sample_every
        self._backends: dict[str, _BackendView] = {}
        self._ops: dict[int, OpRecord] = {}
        self._heartbeats = 0
        self._sampler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Serve snapshots and start sampling lag."""
        self.bus.set_snapshot_provider(self.snapshot)
        self.bus.bind_loop(asyncio.get_running_loop())
        self._sampler = asyncio.create_task(self._run_sampler(), name="ganga-monitor.sampler")

    async def aclose(self, reason: str) -> None:
        """Stop sampling and announce the end."""
        if self._sampler is not None:
            self._sampler.cancel()
        self.sample()
        self.bus.publish(SessionEnded(at=time.time(), reason=reason))

    def _backend(self, name: str) -> _BackendView:
        view = self._backends.get(name)
        if view is None:
            view = self._backends[name] = _BackendView(name)
        return view

    # -- jobs ----------------------------------------------------------------------------------

    def apply(self, change: StatusChange) -> None:
        """Mirror one of Ganga's status changes (Ganga is the truth; its state machine already checked it)."""
        status = ganga_status(change.new)
        if status is None:
            self.counters["rejections"] += 1
            self.bus.publish(
                UpdateRejected(
                    at=time.time(),
                    backend=change.backend,
                    job_id=change.job_id,
                    category="unknown_state",
                    reason=f"Ganga status {change.new!r}",
                )
            )
            return
        self._backend(change.backend)
        if change.group:
            self.masters.add(change.group)
        if change.outputdir:
            self.outputdirs[change.job_id] = change.outputdir
        if status.is_final:
            self._backend(change.backend).awaiting_outputs.pop(change.job_id, None)
        job = self.jobs.get(change.job_id)
        if job is None:
            job = job_from_change(change, status)
            self.jobs[job.job_id] = job
            self.bus.publish(JobAdded(at=change.at, job=job_record(job)))
        elif change.source == "restore":
            return
        if job.status == status:
            return
        old = job.status
        job.status, job.status_since, job.last_confirmed = status, change.at, change.at
        if change.exit_code is not None:
            job.exit_code = change.exit_code
        job.info = change.new if change.new != status else ""
        self.counters["transitions"] += 1
        self.bus.publish(
            JobChanged(
                at=change.at,
                job_id=job.job_id,
                backend=job.backend,
                old=old,
                new=status,
                source=change.source,
                info=job.info,
                exit_code=job.exit_code,
                op_id=change.op_id,
            )
        )

    # -- Ganga's update calls --------------------------------------------------------------------

    def call_queued(
        self, op_id: int, backend: str, job_ids: tuple[str, ...], at: float, kind: OpKind = OpKind.POLL
    ) -> None:
        """Ganga planned an update call (or a job's finalisation, or an output download: ``kind`` fetch_output)."""
        record = OpRecord(
            op_id=op_id, kind=kind, backend=backend, job_ids=job_ids, state=OpState.QUEUED, enqueued_at=at
        )
        self._ops[op_id] = record
        view = self._backend(backend)
        if kind == OpKind.FETCH_OUTPUT:
            for job_id in job_ids:
                job = self.jobs.get(job_id)
                if job is None or not job.status.is_final:
                    view.awaiting_outputs.setdefault(job_id, at)
        self.bus.publish(OpQueued(at=at, op=record))

    def call_started(self, op_id: int, backend: str, at: float) -> None:
        """Ganga's update call began."""
        view = self._backend(backend)
        record = self._ops.get(op_id)
        view.health.call_started(at)
        if record is not None and record.kind == OpKind.FETCH_OUTPUT:
            view.fetches_in_flight += 1
        else:
            view.in_flight += 1
        view.started[op_id] = at
        if record is not None:
            self._ops[op_id] = OpRecord(
                op_id=op_id,
                kind=record.kind,
                backend=backend,
                job_ids=record.job_ids,
                state=OpState.IN_FLIGHT,
                enqueued_at=record.enqueued_at,
                started_at=at,
            )
        self.bus.publish(OpStarted(at=at, op_id=op_id, backend=backend, attempt=1))

    def call_finished(
        self, op_id: int, backend: str, job_ids: tuple[str, ...], error: str | None, changed: int, at: float
    ) -> None:
        """Ganga's update call ended: its jobs' statuses are confirmed unless it raised."""
        view = self._backend(backend)
        started = view.started.pop(op_id, at)
        record = self._ops.pop(op_id, None)
        kind = OpKind.POLL if record is None else record.kind
        if kind == OpKind.FETCH_OUTPUT:
            view.fetches_in_flight = max(0, view.fetches_in_flight - 1)
            view.health.fetch_latency.add(at - started)
            view.health.outcomes.append(error is None)
        else:
            view.in_flight = max(0, view.in_flight - 1)
            view.health.call_finished(at - started, error is None)
        if error is not None:
            self.counters["ganga_call_errors"] += 1
        elif kind == OpKind.POLL:
            for job_id in job_ids:
                job = self.jobs.get(job_id)
                if job is not None:
                    job.last_confirmed = at
        self.bus.publish(
            OpFinished(
                at=at,
                op_id=op_id,
                backend=backend,
                kind=kind,
                outcome="done" if error is None else "error",
                latency=at - started,
                error=error,
                changed=changed,
            )
        )

    # -- lag -----------------------------------------------------------------------------------

    def _active(self, backend: str) -> list[Job]:
        return [
            job
            for job in self.jobs.values()
            if job.backend == backend and job.status.is_active and job.job_id not in self.masters
        ]

    def record(self, view: _BackendView, now: float) -> BackendRecord:
        """A backend's health as Ganga's loop keeps it: lag is measured against Ganga's own poll rate."""
        interval = self._poll_rate(view.name)
        active = self._active(view.name)
        lag = max((now - (job.last_confirmed + interval) for job in active), default=0.0)
        health = view.health
        return BackendRecord(
            name=view.name,
            active_jobs=len(active),
            queued_ops=sum(1 for op in self._ops.values() if op.backend == view.name and op.state == OpState.QUEUED),
            in_flight=view.in_flight,
            fetches_in_flight=view.fetches_in_flight,
            fetches_queued=sum(
                1
                for op in self._ops.values()
                if op.backend == view.name and op.state == OpState.QUEUED and op.kind == OpKind.FETCH_OUTPUT
            ),
            results_lag=max((now - since for since in view.awaiting_outputs.values()), default=0.0),
            concurrency_limit=self._concurrency,
            max_batch=max(1, len(active)),
            lag=max(0.0, lag),
            poll_interval=interval,
            paused=not self._ganga_enabled(),
            calls_per_minute=health.calls_per_minute(now),
            error_rate=health.error_rate,
            last_latency=health.last_latency,
            calls_total=health.calls_total,
        )

    def sample(self) -> None:
        """Publish every backend's health, and a heartbeat."""
        now = time.time()
        for view in list(self._backends.values()):
            record = self.record(view, now)
            view.health.lag_samples.append(record.lag)
            self.bus.publish(LagSampled(at=now, backend=record))
        self._heartbeats += 1
        final = sum(1 for job in self.jobs.values() if job.status.is_final)
        active = sum(1 for job in self.jobs.values() if job.status.is_active)
        self.bus.publish(
            Heartbeat(at=now, seq=self._heartbeats, jobs_total=len(self.jobs), jobs_active=active, jobs_final=final)
        )

    async def _run_sampler(self) -> None:
        while True:
            await asyncio.sleep(self._sample_every)
            self.sample()

    def snapshot(self) -> Snapshot:
        """The present state."""
        now = time.time()
        return Snapshot(
            at=now,
            session=self.session,
            jobs=tuple(job_record(job) for job in self.jobs.values()),
            ops=tuple(self._ops.values()),
            backends=tuple(self.record(view, now) for view in self._backends.values()),
            counters=dict(self.counters),
        )
