"""The scheduler: one asyncio loop, one lane per backend, one truth about every job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from ._bus import EventBus
from ._events import (
    ChangeSource,
    Event,
    Heartbeat,
    JobAdded,
    JobChanged,
    LagSampled,
    RejectionCategory,
    SessionEnded,
    Snapshot,
    UpdateRejected,
    job_record,
)
from ._lane import Lane, SchedulerConfig
from ._model import Job, JobSpec, JobStatus, is_legal_transition
from ._outputs import OutputSink
from ._policy import AdaptiveInterval, GroupRuntimes
from ._store import SessionStore
from .backends._base import Backend, BackendError, StatusReport

__all__ = ["Scheduler", "UnknownBackend", "UnknownJob"]

log = logging.getLogger(__name__)

_BACKEND_FINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED})
"""Finished at the backend: the job goes through ``completing`` while its output is fetched."""


class UnknownJob(KeyError):
    """No job has this id."""


class UnknownBackend(KeyError):
    """No lane has this backend name."""


class Scheduler:
    """Plans and runs every monitoring call, and publishes what it learns.

    Use it as an async context manager; leaving it drains in-flight calls within
    ``config.drain_timeout`` and publishes :class:`SessionEnded`.

    Args:
        backends: one lane is made per backend; names must be unique.
        bus: where events are published.
        outputs: where fetched outputs land.
        store: the session's persistent store, or ``None`` to keep nothing.
        config: retry, breaker, batching and sampling policies.
        policy: adaptive poll intervals.
        session: the session's name on the bus.
    """

    def __init__(
        self,
        backends: Sequence[Backend],
        *,
        bus: EventBus,
        outputs: OutputSink,
        store: SessionStore | None = None,
        config: SchedulerConfig | None = None,
        policy: AdaptiveInterval | None = None,
        session: str = "session",
    ) -> None:
        self.bus = bus
        self.outputs = outputs
        self.store = store
        self.config = config or SchedulerConfig()
        self.policy = policy or AdaptiveInterval()
        self.session = session
        self.jobs: dict[str, Job] = {}
        """Every job of the session, by id."""
        self.lanes: dict[str, Lane] = {}
        for backend in backends:
            if backend.name in self.lanes:
                raise ValueError(f"two backends are named {backend.name!r}")
            self.lanes[backend.name] = Lane(backend, self)
        self.counters: Counter[str] = Counter()
        self.outputs_collected: dict[str, tuple[str, ...]] = {}
        self.groups: dict[str, GroupRuntimes] = {}
        """Running-time statistics per job group, for the adaptive poll policy."""
        self._final = 0
        self._all_final = asyncio.Event()
        self._all_final.set()
        self._next_number = 1
        self._offset = time.time() - time.monotonic()
        self._tasks: asyncio.TaskGroup | None = None
        self._running: list[asyncio.Task[None]] = []
        self._heartbeats = 0
        self._closed = False

    # -- clocks and publishing -----------------------------------------------------------------

    def wall(self, monotonic: float) -> float:
        """Wall-clock time of a monotonic instant."""
        return monotonic + self._offset

    def publish(self, event: Event) -> None:
        """Put an event on the bus."""
        self.bus.publish(event)

    def interval_for(self, job: Job, lane: Lane) -> float:
        """Seconds until ``job`` should be confirmed again."""
        return self.policy.interval(job, lane.base_interval, time.time(), self.groups.get(job.group))

    def lane(self, backend: str) -> Lane:
        """The lane of a backend.

        Raises:
            UnknownBackend: no such backend.
        """
        try:
            return self.lanes[backend]
        except KeyError:
            raise UnknownBackend(backend) from None

    # -- life cycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Scheduler:
        self.bus.set_snapshot_provider(self.snapshot)
        self.bus.bind_loop(asyncio.get_running_loop())
        started: list[Backend] = []
        try:
            for lane in self.lanes.values():
                await lane.backend.start()
                started.append(lane.backend)
                lane.backend.set_listener(lane.on_push)
        except BaseException:
            for backend in started:
                with contextlib.suppress(Exception):
                    await backend.close()
            raise
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        for lane in self.lanes.values():
            self._start_lane(lane)
        self._spawn(self._run_sampler(), "monitor.sampler")
        if self.store is not None:
            self._spawn(self.store.run_flusher(), "monitor.store")
        return self

    def _start_lane(self, lane: Lane) -> None:
        self._spawn(lane.run_planner(), f"monitor[lane={lane.name}].planner")
        for index in range(lane.caps.max_concurrency):
            self._spawn(lane.run_poll_worker(), f"monitor[lane={lane.name}].poll{index}")
        for index in range(lane.caps.fetch_concurrency):
            self._spawn(lane.run_fetch_worker(), f"monitor[lane={lane.name}].fetch{index}")

    async def add_backend(self, backend: Backend) -> Lane:
        """Give a backend that appeared after the start its own lane (e.g. a Ganga user's first Condor job).

        Raises:
            ValueError: a lane of that name exists.
            RuntimeError: the scheduler is not running.
        """
        if backend.name in self.lanes:
            raise ValueError(f"two backends are named {backend.name!r}")
        if self._tasks is None or self._closed:
            raise RuntimeError("the scheduler is not running")
        lane = Lane(backend, self)
        await backend.start()
        backend.set_listener(lane.on_push)
        self.lanes[backend.name] = lane
        self._start_lane(lane)
        return lane

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        assert self._tasks is not None
        self._running.append(self._tasks.create_task(coroutine, name=name))

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self, reason: str = "monitor stopped") -> None:
        """Stop taking work, let in-flight calls finish within the drain deadline, stop."""
        if self._closed:
            return
        self._closed = True
        for lane in self.lanes.values():
            lane.stop_planning()
        in_flight = [asyncio.ensure_future(lane.wait_idle()) for lane in self.lanes.values()]
        _, pending = await asyncio.wait(in_flight, timeout=self.config.drain_timeout)
        for waiter in pending:
            waiter.cancel()
        if pending:
            log.warning("drain deadline passed with calls in flight; cancelling them")
        if self._tasks is not None:
            for task in self._running:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tasks.__aexit__(None, None, None)
        for lane in self.lanes.values():
            lane.backend.set_listener(None)
            try:
                await lane.backend.close()
            except Exception:
                log.exception("%s: closing the backend failed", lane.name)
        if self.store is not None:
            await self.store.flush()
        self.publish(SessionEnded(at=time.time(), reason=reason))

    async def _run_sampler(self) -> None:
        while True:
            await asyncio.sleep(self.config.sample_every)
            self.sample()

    def sample(self) -> None:
        """Publish every lane's health and a heartbeat now."""
        now, at = time.monotonic(), time.time()
        for lane in self.lanes.values():
            record = lane.record(now)
            lane.lag_samples.append(record.lag)
            self.publish(LagSampled(at=at, backend=record))
        self._heartbeats += 1
        active = sum(len(lane.active) for lane in self.lanes.values())
        self.publish(
            Heartbeat(
                at=at, seq=self._heartbeats, jobs_total=len(self.jobs), jobs_active=active, jobs_final=self._final
            )
        )

    # -- jobs in -------------------------------------------------------------------------------

    def _new_id(self) -> str:
        job_id = str(self._next_number)
        self._next_number += 1
        return job_id

    async def submit(self, specs: Sequence[JobSpec]) -> list[Job]:
        """Submit jobs to their backends and start monitoring them.

        Jobs are stored before this returns, so a crash afterwards loses none.

        Raises:
            UnknownBackend: a spec names a backend without a lane.
            BackendError: a backend refused the submission.
        """
        by_backend: dict[str, list[JobSpec]] = {}
        for spec in specs:
            self.lane(spec.backend)
            by_backend.setdefault(spec.backend, []).append(spec)
        submitted: list[Job] = []
        for backend, group in by_backend.items():
            lane = self.lanes[backend]
            # Submission is the user's own act and may be slow; the poll timeout is too tight for it.
            timeout = max(60.0, lane.caps.call_timeout) * (1 + len(group) // 1000)
            async with asyncio.timeout(timeout):
                backend_ids = await lane.backend.submit(group)
            if len(backend_ids) != len(group):
                raise BackendError(f"{backend}: {len(group)} jobs submitted, {len(backend_ids)} ids returned")
            now = time.time()
            jobs = [
                Job(
                    job_id=self._new_id(),
                    backend=backend,
                    name=spec.name,
                    group=spec.group,
                    backend_id=backend_id,
                    status=JobStatus.SUBMITTED,
                    status_since=now,
                    last_confirmed=now,
                    expected=spec.expected,
                )
                for spec, backend_id in zip(group, backend_ids, strict=True)
            ]
            if self.store is not None:
                await self.store.save_now(jobs)
            for job in jobs:
                self.track(job)
            submitted.extend(jobs)
        self.counters["jobs_submitted"] += len(submitted)
        return submitted

    def track(self, job: Job, *, source: ChangeSource = "submit") -> None:
        """Start monitoring a job that already has a backend id (new or restored).

        Raises:
            UnknownBackend: the job's backend has no lane.
            ValueError: the id is taken.
        """
        lane = self.lane(job.backend)
        if job.job_id in self.jobs:
            raise ValueError(f"job id {job.job_id} is already tracked")
        if job.job_id.isdigit():
            self._next_number = max(self._next_number, int(job.job_id) + 1)
        self.jobs[job.job_id] = job
        self._all_final.clear()
        if job.backend_id is not None:
            lane.by_backend_id[job.backend_id] = job.job_id
        if source == "restore" and job.backend_id is not None and not job.status.is_final:
            lane.backend.adopt(job.backend_id)
        if job.status.is_active:
            due = time.monotonic() if source == "restore" else time.monotonic() + self.interval_for(job, lane)
            lane.activate(job, due)
        elif job.status == JobStatus.COMPLETING and lane.caps.fetches_output:
            lane.queue_fetch(job.job_id)
        elif job.status.is_final:
            self._count_final()
        self.publish(JobAdded(at=time.time(), job=job_record(job)))

    # -- what backends say ---------------------------------------------------------------------

    def count_rejection(self, backend: str, job_id: str | None, category: RejectionCategory, reason: str) -> None:
        """Count, log and publish a refused piece of a backend's answer."""
        self.counters["rejections"] += 1
        self.counters[f"rejections.{category}"] += 1
        log.warning("%s: rejected (%s) for job %s: %s", backend, category, job_id, reason)
        self.publish(UpdateRejected(at=time.time(), backend=backend, job_id=job_id, category=category, reason=reason))

    def apply_report(
        self, job: Job, report: StatusReport, source: ChangeSource, op_id: int | None, *, now: float | None = None
    ) -> bool:
        """Believe a backend's report if Ganga's state machine allows it.

        Args:
            job: the job the report is about.
            report: what the backend said.
            source: how the report arrived.
            op_id: the operation that brought it, if any.
            now: wall-clock time of the report (read once per batch by callers in a hurry).

        Returns:
            True if the job changed status.
        """
        now = time.time() if now is None else now
        job.last_confirmed = now
        new = report.status
        fetches = self.lanes[job.backend].caps.fetches_output
        if fetches and job.status == JobStatus.COMPLETING and new in _BACKEND_FINAL:
            return False  # already known; the output fetch settles it
        target = JobStatus.COMPLETING if fetches and new in _BACKEND_FINAL else new
        if target == job.status:
            job.info = report.info or job.info
            return False
        if not is_legal_transition(job.status, target):
            self.count_rejection(
                job.backend, job.job_id, "illegal_transition", f"{job.status} -> {new} ({report.info or 'no detail'})"
            )
            return False
        if new in _BACKEND_FINAL:
            job.outcome = new
        if report.exit_code is not None:
            job.exit_code = report.exit_code
        job.info = report.info
        self._move(job, target, source, op_id, now)
        return True

    def _move(self, job: Job, new: JobStatus, source: ChangeSource, op_id: int | None, now: float) -> None:
        old = job.status
        if old == JobStatus.RUNNING:
            self.groups.setdefault(job.group, GroupRuntimes()).add(now - job.status_since)
        job.status, job.status_since = new, now
        lane = self.lanes[job.backend]
        if new.is_active and not old.is_active:
            lane.activate(job, time.monotonic() + self.interval_for(job, lane))
        elif not new.is_active:
            lane.deactivate(job.job_id)
        if new == JobStatus.COMPLETING and lane.caps.fetches_output:
            lane.queue_fetch(job.job_id)
        if new.is_final and not old.is_final:
            self._count_final()
        elif old.is_final and not new.is_final:
            # Resubmitted (Ganga allows failed -> submitting): final no more.
            self._final -= 1
            self._all_final.clear()
        self.counters["transitions"] += 1
        if self.store is not None:
            self.store.mark_dirty(job)
        self.publish(
            JobChanged(
                at=now,
                job_id=job.job_id,
                backend=job.backend,
                old=old,
                new=new,
                source=source,
                info=job.info,
                exit_code=job.exit_code,
                op_id=op_id,
            )
        )

    def _count_final(self) -> None:
        self._final += 1
        if self._final >= len(self.jobs):
            self._all_final.set()

    async def output_collected(self, job: Job, files: tuple[str, ...], op_id: int | None) -> None:
        """A completing job's output is in place: record it, then settle the job."""
        if job.job_id not in self.outputs_collected:
            self.outputs_collected[job.job_id] = files
            self.counters["outputs_collected"] += 1
            if self.store is not None:
                await self.store.record_output(job.job_id, files)
        if job.status == JobStatus.COMPLETING:
            self._move(job, job.outcome or JobStatus.COMPLETED, "fetch", op_id, time.time())

    def output_lost(self, job: Job, reason: str, op_id: int | None) -> None:
        """A completing job's output will never come: it failed."""
        self.counters["outputs_lost"] += 1
        job.info = f"output unavailable: {reason}"
        if job.status == JobStatus.COMPLETING:
            self._move(job, JobStatus.FAILED, "fetch", op_id, time.time())

    # -- user requests -------------------------------------------------------------------------

    def refresh_now(self, job_id: str) -> None:
        """Poll one job ahead of every queued poll.

        Raises:
            UnknownJob: no such job.
            ValueError: the job is not active, so there is nothing to ask.
        """
        job = self.jobs.get(job_id)
        if job is None:
            raise UnknownJob(job_id)
        if not job.status.is_active:
            raise ValueError(f"job {job_id} is {job.status}; only submitted or running jobs are polled")
        self.lanes[job.backend].refresh_now(job_id)

    def pause(self, backend: str) -> None:
        """Stop calling a backend until :meth:`resume`."""
        self.lane(backend).pause()

    def resume(self, backend: str) -> None:
        """Call a paused backend again."""
        self.lane(backend).resume()

    def set_interval(self, backend: str, seconds: float) -> None:
        """Change a backend's target poll interval.

        Raises:
            ValueError: not a positive number of seconds.
        """
        if not seconds > 0:
            raise ValueError("the poll interval must be a positive number of seconds")
        self.lane(backend).set_interval(seconds)

    # -- reading the state ---------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The present state of every job, queued operation and backend."""
        now = time.monotonic()
        records = []
        for job in self.jobs.values():
            due = self.lanes[job.backend].next_poll_at(job.job_id)
            records.append(job_record(job, next_poll_at=None if due is None else self.wall(due)))
        return Snapshot(
            at=time.time(),
            session=self.session,
            jobs=tuple(records),
            ops=tuple(op for lane in self.lanes.values() for op in lane.op_records()),
            backends=tuple(lane.record(now) for lane in self.lanes.values()),
            counters=dict(self.counters),
        )

    @property
    def final_count(self) -> int:
        """Jobs in a final status."""
        return self._final

    def all_final(self) -> bool:
        """Whether every tracked job is final."""
        return self._all_final.is_set()

    async def wait_all_final(self) -> None:
        """Wait until every tracked job is final."""
        await self._all_final.wait()

    def status_counts(self, jobs: Iterable[Job] | None = None) -> Mapping[JobStatus, int]:
        """How many jobs are in each status."""
        return Counter(job.status for job in (self.jobs.values() if jobs is None else jobs))
