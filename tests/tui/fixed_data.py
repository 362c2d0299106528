"""A fixed, deterministic session for TUI tests: events of a small grid run at a frozen time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

from monitor_core import (
    BackendRecord,
    Command,
    CommandAcked,
    ConnectionChanged,
    Event,
    EventSource,
    JobChanged,
    JobRecord,
    JobStatus,
    LagSampled,
    OpFinished,
    OpKind,
    OpRecord,
    OpState,
    Snapshot,
)

NOW = 1_700_000_000.0
"""The frozen wall clock of every fixed app."""

S = JobStatus


def frozen_clock() -> float:
    return NOW


class FixedSource(EventSource):
    """Yields a fixed list of events, then waits until closed. Commands are refused (a recording)."""

    read_only = True

    def __init__(self, events: Sequence[Event], description: str = "fixed session (test data)") -> None:
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        for event in events:
            self._queue.put_nowait(event)
        self.description = description
        self.drained = asyncio.Event()
        """Set whenever every event handed in so far was handed out."""
        self.sent: list[Command] = []

    def push(self, *events: Event) -> None:
        """Hand more events to the viewer."""
        self.drained.clear()
        for event in events:
            self._queue.put_nowait(event)

    async def events(self) -> AsyncIterator[Event | ConnectionChanged]:
        while True:
            if self._queue.empty():
                self.drained.set()
            event = await self._queue.get()
            if event is None:
                return
            yield event

    async def send(self, command: Command) -> CommandAcked:
        self.sent.append(command)
        return CommandAcked(at=NOW, command_id=command.command_id, ok=False, message="read-only: a fixed recording")

    async def aclose(self) -> None:
        self._queue.put_nowait(None)


def _backends(dirac_lag: float) -> tuple[BackendRecord, ...]:
    return (
        BackendRecord(
            name="local",
            active_jobs=6,
            queued_ops=0,
            in_flight=1,
            concurrency_limit=4,
            max_batch=50,
            lag=0.0,
            poll_interval=5.0,
            calls_per_minute=12,
            last_latency=0.004,
        ),
        BackendRecord(
            name="dirac-sim",
            active_jobs=20,
            queued_ops=2,
            in_flight=2,
            concurrency_limit=4,
            max_batch=100,
            lag=dirac_lag,
            poll_interval=10.0,
            calls_per_minute=90,
            max_calls_per_minute=600,
            error_rate=0.05,
            last_latency=0.42,
            fetches_in_flight=4,
            fetch_limit=6,
            fetches_queued=35,
            results_lag=min(dirac_lag * 2, 42.0),
            collect_bound=12.0,
        ),
    )


def _job(job_id: int, backend: str, group: str, status: JobStatus, since: float, confirmed: float) -> JobRecord:
    interval = 5.0 if backend == "local" else 10.0
    return JobRecord(
        job_id=str(job_id),
        backend=backend,
        status=status,
        name=f"{group}.{job_id % 100}",
        group=group,
        backend_id=f"{backend}-{job_id}",
        status_since=NOW - since,
        last_confirmed=NOW - confirmed,
        exit_code=(1 if status == S.FAILED else 0) if status.is_final else None,
        info={S.RUNNING: "Running", S.FAILED: "Failed", S.COMPLETED: "Done"}.get(status, ""),
        next_poll_at=(NOW - confirmed + interval) if status.is_active else None,
    )


def session_events() -> list[Event]:
    """A snapshot of 60 jobs on two backends, history for some, lag samples and operations."""
    jobs: list[JobRecord] = []
    statuses = [S.COMPLETED] * 14 + [S.RUNNING] * 14 + [S.SUBMITTED] * 6 + [S.FAILED] * 4 + [S.COMPLETING] * 2
    for index, status in enumerate(statuses):
        job_id = index + 1
        group = "dirac-sim-batch000" if index < 20 else "dirac-sim-batch001"
        jobs.append(_job(job_id, "dirac-sim", group, status, since=20 + index, confirmed=2 + index % 7))
    for index in range(20):
        job_id = 41 + index
        status = S.COMPLETED if index < 10 else S.RUNNING if index < 16 else S.FAILED
        jobs.append(_job(job_id, "local", "local-batch000", status, since=5 + index, confirmed=1 + index % 3))
    # Warnings: job 22 has not been confirmed for 100s (10s interval); job 39 completes for 90s.
    jobs[21] = _job(22, "dirac-sim", "dirac-sim-batch001", S.RUNNING, since=120, confirmed=100)
    jobs[39] = _job(40, "dirac-sim", "dirac-sim-batch001", S.COMPLETING, since=90, confirmed=3)
    # Job 15 has been running for 900s; its group usually runs for about 20s.
    jobs[14] = _job(15, "dirac-sim", "dirac-sim-batch000", S.RUNNING, since=900, confirmed=1)
    # Job 38 finished, but its outputs could not be collected.
    jobs[37] = replace(
        _job(38, "dirac-sim", "dirac-sim-batch001", S.FAILED, since=30, confirmed=30),
        collect_error="output fetch timed out 5 times",
    )
    ops = (
        OpRecord(
            op_id=501,
            kind=OpKind.POLL,
            backend="dirac-sim",
            job_ids=tuple(str(i) for i in range(15, 29)),
            state=OpState.IN_FLIGHT,
            enqueued_at=NOW - 2.5,
            started_at=NOW - 0.8,
        ),
        OpRecord(
            op_id=502,
            kind=OpKind.POLL,
            backend="dirac-sim",
            job_ids=tuple(str(i) for i in range(29, 35)),
            state=OpState.QUEUED,
            enqueued_at=NOW - 1.2,
            attempt=2,
        ),
        OpRecord(
            op_id=503,
            kind=OpKind.FETCH_OUTPUT,
            backend="dirac-sim",
            job_ids=("39",),
            state=OpState.QUEUED,
            enqueued_at=NOW - 0.6,
        ),
        OpRecord(
            op_id=504,
            kind=OpKind.POLL,
            backend="local",
            job_ids=tuple(str(i) for i in range(51, 57)),
            state=OpState.IN_FLIGHT,
            enqueued_at=NOW - 0.3,
            started_at=NOW - 0.2,
        ),
        OpRecord(
            op_id=500,
            kind=OpKind.POLL,
            backend="local",
            job_ids=("41", "42"),
            state=OpState.IN_FLIGHT,
            enqueued_at=NOW - 4.0,
            started_at=NOW - 3.9,
        ),
    )
    events: list[Event] = [
        Snapshot(at=NOW - 30, session="fixed-demo", jobs=tuple(jobs), ops=ops, backends=_backends(0.0), counters={})
    ]
    for step, lag in enumerate((0.0, 0.5, 2.0, 4.0, 7.5, 11.0, 9.0, 14.0, 18.5, 24.0)):
        events.append(LagSampled(at=NOW - 10 + step, backend=_backends(lag)[1]))
        events.append(LagSampled(at=NOW - 10 + step, backend=_backends(0.0)[0]))
    # Five jobs of batch000 ran for about 20s each; that is the group's usual running time.
    for job_id in (1, 2, 3, 4, 5):
        started = NOW - 200 + job_id
        events.append(
            JobChanged(
                at=started, job_id=str(job_id), backend="dirac-sim", old=S.SUBMITTED, new=S.RUNNING, source="poll"
            )
        )
        events.append(
            JobChanged(
                at=started + 20, job_id=str(job_id), backend="dirac-sim", old=S.RUNNING, new=S.COMPLETING, source="poll"
            )
        )
        events.append(
            JobChanged(
                at=started + 21,
                job_id=str(job_id),
                backend="dirac-sim",
                old=S.COMPLETING,
                new=S.COMPLETED,
                source="fetch",
            )
        )
    events.append(
        OpFinished(at=NOW - 0.5, op_id=500, backend="local", kind=OpKind.POLL, outcome="done", latency=3.4, changed=0)
    )
    return events
