"""The scheduler: one asyncio loop, one lane per backend, one book of every job.

The data's path is one way: a lane calls its backend, hands each answer to the
:class:`~monitor_core._book.JobBook`, carries out the effects the book returns (poll the job
again, stop polling it, fetch its outputs) and publishes on the bus; views subscribe to the
bus. The scheduler only wires these together and answers the session's requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final

from ._book import Activate, JobBook, NotCollectable
from ._bus import EventBus, SnapshotProgress
from ._clock import Clock
from ._events import (
    ChangeSource,
    Event,
    Heartbeat,
    JobAdded,
    JobRecord,
    LagSampled,
    OpRecord,
    RejectionCategory,
    SessionEnded,
    Snapshot,
    job_record,
)
from ._lane import Lane, LaneContext
from ._loop_probe import LoopLagProbe
from ._model import FINAL_STATUSES, Job, JobSpec, JobStatus
from ._outputs import OutputSink
from ._policy import AdaptiveInterval, GroupRuntimes
from ._settings import SchedulerConfig
from ._store import SessionStore
from ._time_slice import TimeSlice
from .backends._base import Backend, BackendError, StatusReport

__all__ = ["NotCollectable", "Scheduler", "UnknownBackend", "UnknownJob"]

log = logging.getLogger(__name__)

_TRACK_CHUNK: Final = 64
"""Jobs tracked together (one clock reading, one heap entry per due time) between two looks at the time slice."""


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
        self.clock = Clock()
        self.book = JobBook(publish=self.publish, clock=self.clock, store=store)
        self._context = LaneContext(
            book=self.book,
            publish=self.publish,
            settings=self.config,
            clock=self.clock,
            outputs=outputs,
            policy=self.policy,
        )
        self.lanes: dict[str, Lane] = {}
        for backend in backends:
            if backend.name in self.lanes:
                raise ValueError(f"two backends are named {backend.name!r}")
            self.lanes[backend.name] = self._make_lane(backend)
        self._group: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._running: list[asyncio.Task[None]] = []
        self._heartbeats = 0
        self._loop_probe = LoopLagProbe()
        self._closed = False

    def _make_lane(self, backend: Backend) -> Lane:
        self.book.add_backend(backend.name, fetches_output=backend.capabilities.fetches_output)
        return Lane(backend, self._context)

    # -- the book's figures --------------------------------------------------------------------

    @property
    def jobs(self) -> dict[str, Job]:
        """Every job of the session, by id."""
        return self.book.jobs

    @property
    def counters(self) -> Counter[str]:
        """Session-wide counters (transitions, rejections, outputs collected, ...)."""
        return self.book.counters

    @property
    def outputs_collected(self) -> dict[str, tuple[str, ...]]:
        """Job id -> its collected output files."""
        return self.book.outputs_collected

    @property
    def groups(self) -> dict[str, GroupRuntimes]:
        """Running-time statistics per job group, for the adaptive poll policy."""
        return self.book.groups

    # -- clocks and publishing -----------------------------------------------------------------

    def wall(self, monotonic: float) -> float:
        """Wall-clock time of a monotonic instant."""
        return self.clock.to_wall(monotonic)

    def publish(self, event: Event) -> None:
        """Put an event on the bus."""
        self.bus.publish(event)

    def interval_for(self, job: Job, lane: Lane) -> float:
        """Seconds until ``job`` should be confirmed again (the lane's adaptive interval)."""
        return lane.interval(job)

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
        self.bus.set_snapshot_provider(self.snapshot, gradual=self.snapshot_gradually)
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
        ready = asyncio.Event()
        self._runner = asyncio.create_task(self._run(ready), name="monitor.scheduler")
        ready_wait = asyncio.ensure_future(ready.wait())
        await asyncio.wait({ready_wait, self._runner}, return_when=asyncio.FIRST_COMPLETED)
        ready_wait.cancel()
        if self._runner.done():
            self._runner.result()  # raises what stopped it
        for lane in self.lanes.values():
            self._start_lane(lane)
        self._spawn(self._run_sampler(), "monitor.sampler")
        self._spawn(self._loop_probe.run(), "monitor.loop_probe")
        if self.store is not None:
            self._spawn(self.store.run_flusher(), "monitor.store")
        return self

    async def _run(self, ready: asyncio.Event) -> None:
        """Own the task group of every lane's loops, from start until :meth:`aclose`."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            ready.set()
            await self._stop.wait()
            for task in self._running:
                task.cancel()

    def _start_lane(self, lane: Lane) -> None:
        self._spawn(lane.run_planner(), f"monitor[lane={lane.name}].planner")
        for index in range(lane.caps.max_concurrency):
            self._spawn(lane.run_poll_worker(), f"monitor[lane={lane.name}].poll{index}")
        self._spawn(lane.run_fetcher(), f"monitor[lane={lane.name}].fetcher")

    async def add_backend(self, backend: Backend) -> Lane:
        """Give a backend that appeared after the start its own lane (e.g. a Ganga user's first Condor job).

        Raises:
            ValueError: a lane of that name exists.
            RuntimeError: the scheduler is not running.
        """
        if backend.name in self.lanes:
            raise ValueError(f"two backends are named {backend.name!r}")
        if self._group is None or self._closed:
            raise RuntimeError("the scheduler is not running")
        lane = self._make_lane(backend)
        await backend.start()
        backend.set_listener(lane.on_push)
        self.lanes[backend.name] = lane
        self._start_lane(lane)
        return lane

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        assert self._group is not None
        self._running.append(self._group.create_task(coroutine, name=name))

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
        if self._runner is not None:
            self._stop.set()
            try:
                await self._runner
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("a lane's loop failed")
        for lane in self.lanes.values():
            lane.backend.set_listener(None)
            try:
                await lane.backend.close()
            except Exception:
                log.exception("%s: closing the backend failed", lane.name)
        if self.store is not None:
            await self.store.flush()
        self.publish(SessionEnded(at=self.clock.wall_now(), reason=reason))

    async def _run_sampler(self) -> None:
        while True:
            await asyncio.sleep(self.config.sample_every)
            self.sample()

    def sample(self) -> None:
        """Publish every lane's health and a heartbeat now."""
        now = self.clock.now()
        at = self.clock.to_wall(now)
        for lane in self.lanes.values():
            self.publish(LagSampled(at=at, backend=lane.sample(now)))
        self._heartbeats += 1
        active = sum(len(lane.active) for lane in self.lanes.values())
        worst, bins = self._loop_probe.take()
        self.publish(
            Heartbeat(
                at=at,
                seq=self._heartbeats,
                jobs_total=len(self.book.jobs),
                jobs_active=active,
                jobs_final=self.book.final_count,
                loop_lag=worst,
                loop_lag_bins=bins,
                jobs_by_status={status.value: n for status, n in self.book.by_status.items() if n},
            )
        )

    # -- jobs in -------------------------------------------------------------------------------

    async def submit(self, specs: Sequence[JobSpec]) -> list[Job]:
        """Submit jobs to their backends and start monitoring them.

        Jobs are stored before this returns, so a crash afterwards loses none. Each submission
        call counts against its service's calls-per-minute allowance.

        Raises:
            UnknownBackend: a spec names a backend without a lane.
            BackendError: a backend refused the submission.
        """
        by_backend: dict[str, list[JobSpec]] = {}
        # Sorting 100,000 specs by backend in one go took 16 ms of the loop.
        time_slice = TimeSlice()
        for spec in specs:
            group = by_backend.get(spec.backend)
            if group is None:
                self.lane(spec.backend)  # an unknown backend is refused before anything is submitted
                group = by_backend[spec.backend] = []
            group.append(spec)
            if time_slice.spent():
                await time_slice.yield_to_loop()
        submitted: list[Job] = []
        for backend, group in by_backend.items():
            lane = self.lanes[backend]
            await lane.take_direct_call()
            # Submission is the user's own act and may be slow; the poll timeout is too tight for it.
            timeout = max(60.0, lane.caps.call_timeout) * (1 + len(group) // 1000)
            async with asyncio.timeout(timeout):
                backend_ids = await lane.backend.submit(group)
            if len(backend_ids) != len(group):
                raise BackendError(f"{backend}: {len(group)} jobs submitted, {len(backend_ids)} ids returned")
            now = self.clock.wall_now()
            jobs: list[Job] = []
            # A count of jobs a step is no bound on a step's time on a loaded machine: steps of
            # 1,000 jobs were among the submitting task's steps of 8-28 ms of the loop's CPU
            # while the demo submitted 100,000.
            time_slice = TimeSlice()
            for spec, backend_id in zip(group, backend_ids, strict=True):
                jobs.append(
                    Job(
                        job_id=self.book.new_id(),
                        backend=backend,
                        name=spec.name,
                        group=spec.group,
                        backend_id=backend_id,
                        status=JobStatus.SUBMITTED,
                        status_since=now,
                        last_confirmed=now,
                        expected=spec.expected,
                    )
                )
                if time_slice.spent():
                    await time_slice.yield_to_loop()
            if self.store is not None:
                await self.store.save_now(jobs)
            await self.track_all(jobs)
            submitted.extend(jobs)
        self.counters["jobs_submitted"] += len(submitted)
        return submitted

    async def kill(self, job_id: str) -> None:
        """Ask a job's backend to stop it (counted against the service's allowance), then poll it at once.

        Raises:
            UnknownJob: no such job.
            ValueError: the job is not active.
            BackendError: the backend could not kill it.
        """
        job = self.jobs.get(job_id)
        if job is None:
            raise UnknownJob(job_id)
        if not job.status.is_active or job.backend_id is None:
            raise ValueError(f"job {job_id} is {job.status}; only submitted or running jobs can be killed")
        lane = self.lanes[job.backend]
        await lane.take_direct_call()
        async with asyncio.timeout(lane.caps.call_timeout):
            await lane.backend.kill(job.backend_id)
        self.refresh_now(job_id)

    def track(self, job: Job, *, source: ChangeSource = "submit") -> None:
        """Start monitoring a job that already has a backend id (new or restored).

        Raises:
            UnknownBackend: the job's backend has no lane.
            ValueError: the id is taken.
        """
        lane = self.lane(job.backend)
        restored = source == "restore"
        effects = self.book.add(job, restored=restored)
        if restored and job.backend_id is not None and not job.status.is_final:
            lane.backend.adopt(job.backend_id)
        # The job's first due time travels in its JobAdded, not in a Rescheduled of its own.
        lane.carry_out(effects, announce=False)
        due = lane.next_poll_at(job.job_id)
        self.publish(
            JobAdded(
                at=self.clock.wall_now(),
                job=job_record(job, next_poll_at=None if due is None else self.clock.to_wall(due)),
            )
        )
        lane.on_tracked(job)

    async def track_all(self, jobs: Sequence[Job], *, source: ChangeSource = "submit") -> None:
        """Start monitoring many jobs, a slice at a time between yields to the loop (see :meth:`track_many`).

        Raises:
            UnknownBackend: a job's backend has no lane (the jobs before it are tracked).
            ValueError: an id is taken (likewise).
        """
        # 100,000 jobs must not hold the loop (and every lane) for a second.
        time_slice = TimeSlice(check_every=1)
        for start in range(0, len(jobs), _TRACK_CHUNK):
            if start and time_slice.spent():
                await time_slice.yield_to_loop()
            self.track_many(jobs[start : start + _TRACK_CHUNK], source=source)

    def track_many(self, jobs: Sequence[Job], *, source: ChangeSource = "submit") -> None:
        """Start monitoring several jobs at once: what :meth:`track` does for each, in bulk.

        Every job still gets its own :class:`JobAdded`; the jobs that become due together enter
        their lane's heap as one entry, read the clock once and share one wake-up of the planner.

        Raises:
            UnknownBackend: a job's backend has no lane (the jobs before it are tracked).
            ValueError: an id is taken (likewise).
        """
        restored = source == "restore"
        now = self.clock.now()
        wall = self.clock.to_wall(now)
        book, lanes = self.book, self.lanes
        due_by_lane: dict[str, list[tuple[str, float]]] = {}
        added: list[Job] = []
        announcements: list[Event] = []
        try:
            for job in jobs:
                lane = lanes.get(job.backend)
                if lane is None:
                    lane = self.lane(job.backend)  # raises UnknownBackend
                effects = book.add(job, restored=restored)
                if restored and job.backend_id is not None and job.status not in FINAL_STATUSES:
                    lane.backend.adopt(job.backend_id)
                due: float | None = None
                for effect in effects:
                    if isinstance(effect, Activate):
                        due = now if effect.now else now + lane.interval_at(job, wall)
                        entries = due_by_lane.get(lane.name)
                        if entries is None:
                            entries = due_by_lane[lane.name] = []
                        entries.append((job.job_id, due))
                    else:
                        lane.carry_out((effect,), announce=False)
                announcements.append(
                    JobAdded(at=wall, job=job_record(job, next_poll_at=None if due is None else wall + (due - now)))
                )
                added.append(job)
        finally:
            # Whatever was added is announced and polled, even when a later job was refused.
            self.bus.publish_many(announcements)
            for name, entries in due_by_lane.items():
                self.lanes[name].activate_many(entries)
            for lane in self.lanes.values():
                if lane.holds_news:
                    for job in added:
                        if job.backend == lane.name:
                            lane.on_tracked(job)

    # -- what backends say ---------------------------------------------------------------------

    def count_rejection(self, backend: str, job_id: str | None, category: RejectionCategory, reason: str) -> None:
        """Count, log and publish a refused piece of a backend's answer."""
        self.book.reject(backend, job_id, category, reason)

    def apply_report(
        self, job: Job, report: StatusReport, source: ChangeSource, op_id: int | None, *, now: float | None = None
    ) -> bool:
        """Believe a backend's report if Ganga's state machine allows it, and carry out what follows.

        Args:
            job: the job the report is about.
            report: what the backend said.
            source: how the report arrived.
            op_id: the operation that brought it, if any.
            now: wall-clock time of the report.

        Returns:
            True if the job changed status.
        """
        before = self.book.transitions
        effects = self.book.apply(job, report, source, op_id, self.clock.wall_now() if now is None else now)
        if effects:
            self.lanes[job.backend].carry_out(effects)
        return self.book.transitions != before

    async def output_collected(self, job: Job, files: tuple[str, ...], op_id: int | None) -> None:
        """A job's outputs are in place by other means than a lane's fetch (e.g. Ganga settled a split job)."""
        await self.book.output_collected(job, files, op_id)

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

    def collect_now(self, job_id: str) -> None:
        """Collect a finished job's outputs ahead of every queued fetch; also retries a failed collection.

        Raises:
            UnknownJob: no such job.
            NotCollectable: the job has nothing to collect (not finished, or collected already).
        """
        if job_id not in self.jobs:
            raise UnknownJob(job_id)
        fetch = self.book.collect_request(job_id)
        self.lanes[fetch.job.backend].carry_out((fetch,))

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
        records = [self._job_record(job) for job in self.jobs.values()]
        return self._snapshot_of(records, [op for lane in self.lanes.values() for op in lane.op_records()])

    async def snapshot_gradually(self, progress: SnapshotProgress) -> Snapshot:
        """:meth:`snapshot`, made a slice of the loop at a time (see :data:`~monitor_core._bus.GradualSnapshot`).

        Each job's record is made as it is reached, so it holds every change up to then; the
        bus leaves out of the subscriber's stream the changes a record already holds. An
        operation's events are sent whatever its record holds: folding one twice changes nothing.
        """
        jobs = self.jobs
        order = list(jobs)
        made = progress.made
        records = []
        time_slice = TimeSlice()
        for job_id in order:
            records.append(self._job_record(jobs[job_id]))
            made.add(job_id)
            if time_slice.spent():
                await time_slice.yield_to_loop()
        ops = []
        for lane in self.lanes.values():
            for op in lane.ops_in_order():
                if op.op_id in lane.ops:
                    ops.append(lane.op_record(op))
                if time_slice.spent():
                    await time_slice.yield_to_loop()
        return self._snapshot_of(records, ops)

    def _job_record(self, job: Job) -> JobRecord:
        """A job as a snapshot holds it, with its next poll as its lane plans it."""
        due = self.lanes[job.backend].next_poll_at(job.job_id)
        return job_record(job, next_poll_at=None if due is None else self.clock.to_wall(due))

    def _snapshot_of(self, records: list[JobRecord], ops: list[OpRecord]) -> Snapshot:
        now = self.clock.now()
        return Snapshot(
            at=self.clock.to_wall(now),
            session=self.session,
            jobs=tuple(records),
            ops=tuple(ops),
            backends=tuple(lane.record(now) for lane in self.lanes.values()),
            counters=dict(self.counters),
        )

    @property
    def final_count(self) -> int:
        """Jobs in a final status."""
        return self.book.final_count

    def all_final(self) -> bool:
        """Whether every tracked job is final."""
        return self.book.all_final.is_set()

    async def wait_all_final(self) -> None:
        """Wait until every tracked job is final."""
        await self.book.all_final.wait()

    def status_counts(self, jobs: Iterable[Job] | None = None) -> Mapping[JobStatus, int]:
        """How many jobs are in each status."""
        return Counter(job.status for job in (self.jobs.values() if jobs is None else jobs))
