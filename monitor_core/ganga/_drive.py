"""Drive mode: the scheduler replaces Ganga's monitoring loop.

Each Ganga backend gets a lane. A lane's poll runs that backend's own monitoring call on a
worker thread (never on the loop) under the lane's concurrency limit, timeout, backoff and
circuit breaker. A Local job's wrapper process is watched through a pidfd, and its exit
makes the lane poll the job at once, so Ganga's completion path runs within moments of the
exit. Ganga's threads reach the loop only through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .._bus import EventBus
from .._lane import SchedulerConfig
from .._model import JobSpec
from .._outputs import OutputSink
from .._scheduler import Scheduler
from ..backends._base import (
    Backend,
    BackendError,
    Capabilities,
    FetchResult,
    OutputUnavailable,
    PollResult,
    Rejection,
    StatusReport,
)
from ._calls import CallOutcome, update_jobs
from ._changes import CallContext, StatusChange, ganga_status, job_from_change
from ._exits import ExitWatcher

__all__ = ["DriveConfig", "GangaBackend", "GangaDriver"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DriveConfig:
    """How drive mode treats Ganga's backends. Times are seconds.

    ``poll_intervals`` overrides a backend's target interval; a backend not named there uses
    Ganga's own ``[PollThread]`` rate for it, except Local, whose status file is cheap to read
    and whose exits arrive as events anyway.
    """

    poll_intervals: Mapping[str, float] = field(default_factory=dict)
    local_interval: float = 2.0
    call_timeout: float = 60.0
    max_concurrency: int = 2
    max_batch: int = 100
    scheduler: SchedulerConfig = field(default_factory=lambda: SchedulerConfig(breaker_threshold=3))
    auto_resubmit: bool = True


class GangaBackend(Backend):
    """One Ganga backend (``Local``, ``Interactive``, ``Slurm``, ...) as a lane sees it.

    A job's backend id is its Ganga full id. Status changes made during a call come back as
    the call's answer, in order, so the bus shows every one of them under the call's operation.

    Args:
        name: Ganga's name of the backend class.
        capabilities: limits and interval for its lane.
        executor: the worker threads that make Ganga's calls.
        late_changes: takes the changes of a call the lane gave up on, when it finally ends.
        max_resubmit_fraction: Ganga's auto-resubmit threshold, or ``None`` to never resubmit.
    """

    def __init__(
        self,
        name: str,
        capabilities: Capabilities,
        *,
        executor: concurrent.futures.ThreadPoolExecutor,
        late_changes: Callable[[list[StatusChange]], None],
        max_resubmit_fraction: float | None,
    ) -> None:
        super().__init__(name, capabilities)
        self._executor = executor
        self._late_changes = late_changes
        self._max_resubmit_fraction = max_resubmit_fraction
        self._lock = threading.Lock()
        self._calls: dict[str, concurrent.futures.Future[CallOutcome]] = {}
        """Each job's call still running on a worker thread, even if the lane gave up on it."""
        self._abandoned: set[concurrent.futures.Future[CallOutcome]] = set()

    async def submit(self, specs: Sequence[JobSpec]) -> list[str]:
        raise BackendError("jobs of a Ganga session are submitted through Ganga")

    async def fetch_output(self, backend_id: str, destination: Path) -> FetchResult:
        raise OutputUnavailable("Ganga puts the output in its own workspace")

    async def poll(self, backend_ids: Sequence[str]) -> PollResult:
        # Two calls on one job would both run its completion, so a job still inside an earlier
        # call waits for it (a "refresh now" can overlap a regular poll), and a job whose
        # earlier call the lane gave up on is left out until that call comes back.
        while True:
            with self._lock:
                live = {
                    call
                    for job_id in backend_ids
                    if (call := self._calls.get(job_id)) is not None and call not in self._abandoned
                }
            if not live:
                break
            await asyncio.wait([asyncio.wrap_future(call) for call in live])
        with self._lock:
            free = [job_id for job_id in backend_ids if job_id not in self._calls]
            if not free:
                raise BackendError(f"the earlier call on job(s) {', '.join(backend_ids)} is still inside Ganga")
            context = CallContext(source="poll", batch=frozenset(free))
            future = self._executor.submit(update_jobs, free, context, self._max_resubmit_fraction)
            for job_id in free:
                self._calls[job_id] = future
        future.add_done_callback(lambda done: self._release(free, done))
        try:
            outcome: CallOutcome = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # Timed out: the thread goes on inside Ganga; what it changes still reaches the bus.
            with self._lock:
                self._abandoned.add(future)
            future.add_done_callback(lambda _: self._late_changes(list(context.collected)))
            raise
        except Exception as exc:
            self._late_changes(list(context.collected))
            raise BackendError(f"{type(exc).__name__}: {exc}") from exc
        if outcome.failed_as_a_whole:
            self._late_changes(list(context.collected))
            job_id, error = next(iter(outcome.errors.items()))
            raise BackendError(f"update of {len(outcome.errors)} job(s) raised, e.g. {job_id}: {error}")
        return _answer(context.collected + outcome.confirmations, outcome)

    def _release(self, job_ids: Sequence[str], call: concurrent.futures.Future[CallOutcome]) -> None:
        with self._lock:
            for job_id in job_ids:
                if self._calls.get(job_id) is call:
                    del self._calls[job_id]
            self._abandoned.discard(call)

    async def close(self) -> None:
        # A thread stuck inside a backend cannot be joined; do not wait for it.
        self._executor.shutdown(wait=False, cancel_futures=True)


def _answer(changes: list[StatusChange], outcome: CallOutcome) -> PollResult:
    reports: list[StatusReport] = []
    rejections: list[Rejection] = []
    for change in changes:
        status = ganga_status(change.new)
        if status is None:
            rejections.append(Rejection(change.job_id, "unknown_state", f"Ganga status {change.new!r}"))
            continue
        reports.append(StatusReport(change.job_id, status, info=_info(change), exit_code=change.exit_code))
    for job_id, error in outcome.errors.items():
        rejections.append(Rejection(job_id, "garbage", f"its update raised {error}"))
    for job_id in outcome.missing:
        rejections.append(Rejection(job_id, "unknown_job", "no longer in Ganga's registry"))
    return PollResult(reports=reports, rejections=rejections)


def _info(change: StatusChange) -> str:
    return change.new if ganga_status(change.new) != change.new else ""


class GangaDriver:
    """The scheduler of a Ganga session in drive mode, fed by the status hook.

    Every method runs on the monitor's loop. Changes are applied in the order Ganga made them,
    by one task, because a new backend's lane has to be started before its first job is tracked.

    Args:
        bus: where the scheduler publishes.
        session: the session's name on the bus.
        config: drive-mode policies.
        ganga_poll_rate: Ganga's own poll rate of a backend.
        max_resubmit_fraction: Ganga's auto-resubmit threshold.
    """

    def __init__(
        self,
        bus: EventBus,
        session: str,
        config: DriveConfig,
        *,
        ganga_poll_rate: Callable[[str], float],
        max_resubmit_fraction: float,
    ) -> None:
        self.config = config
        self._outputs_dir = Path(tempfile.mkdtemp(prefix="ganga-monitor-"))
        self.scheduler = Scheduler(
            [], bus=bus, outputs=OutputSink(self._outputs_dir), config=config.scheduler, session=session
        )
        self._ganga_poll_rate = ganga_poll_rate
        self._max_resubmit_fraction = max_resubmit_fraction if config.auto_resubmit else None
        self._changes: asyncio.Queue[StatusChange] = asyncio.Queue()
        self._consumer: asyncio.Task[None] | None = None
        self._exits: ExitWatcher | None = None
        self._exited_early: set[str] = set()
        self.outputdirs: dict[str, str] = {}
        """Where Ganga put each finished job's output."""

    async def start(self) -> None:
        """Start the scheduler and the task that applies Ganga's changes."""
        await self.scheduler.__aenter__()
        self._exits = ExitWatcher(asyncio.get_running_loop(), self._process_ended)
        self._consumer = asyncio.create_task(self._apply_changes(), name="ganga-monitor.changes")

    async def aclose(self, reason: str) -> None:
        """Apply the changes already posted, stop watching, drain the lanes; publishes ``SessionEnded``."""
        if self._consumer is not None:
            try:
                async with asyncio.timeout(self.config.scheduler.drain_timeout):
                    await self._changes.join()
            except TimeoutError:
                log.warning("%d Ganga changes were not applied before the end", self._changes.qsize())
            self._consumer.cancel()
        if self._exits is not None:
            self._exits.close()
        await self.scheduler.aclose(reason)
        shutil.rmtree(self._outputs_dir, ignore_errors=True)

    # -- what the hooks post ---------------------------------------------------------------------

    def post(self, change: StatusChange) -> None:
        """Queue one of Ganga's status changes (loop thread)."""
        self._changes.put_nowait(change)

    def post_many(self, changes: list[StatusChange]) -> None:
        """Queue the changes of a call the lane gave up on (loop thread)."""
        for change in changes:
            self._changes.put_nowait(change)

    def wrapper_started(self, job_id: str, pidfd: int | None) -> None:
        """Watch a Local wrapper process (loop thread)."""
        assert self._exits is not None
        self._exits.watch(job_id, pidfd)

    # -- applying them -------------------------------------------------------------------------

    async def _apply_changes(self) -> None:
        while True:
            change = await self._changes.get()
            try:
                await self._apply(change)
            except Exception:
                log.exception("applying Ganga's change %s failed", change)
            finally:
                self._changes.task_done()

    def _capabilities(self, backend: str) -> Capabilities:
        config = self.config
        if backend in config.poll_intervals:
            interval = config.poll_intervals[backend]
        elif backend == "Local":
            interval = config.local_interval
        else:
            interval = self._ganga_poll_rate(backend)
        return Capabilities(
            max_batch=config.max_batch,
            max_concurrency=config.max_concurrency,
            fetch_concurrency=0,
            blocking=True,
            push_updates=backend == "Local",
            poll_interval=interval,
            call_timeout=config.call_timeout,
            fetches_output=False,
        )

    async def _lane_for(self, backend: str) -> None:
        if backend in self.scheduler.lanes:
            return
        loop = asyncio.get_running_loop()
        executor = concurrent.futures.ThreadPoolExecutor(
            # Spare threads, so one hung call does not take a slot for good.
            max_workers=self.config.max_concurrency + 2,
            thread_name_prefix=f"ganga-monitor[{backend}]",
        )

        def late(changes: list[StatusChange]) -> None:
            if changes and not loop.is_closed():
                loop.call_soon_threadsafe(self.post_many, changes)

        await self.scheduler.add_backend(
            GangaBackend(
                backend,
                self._capabilities(backend),
                executor=executor,
                late_changes=late,
                max_resubmit_fraction=self._max_resubmit_fraction,
            )
        )
        log.info("monitoring Ganga backend %s in its own lane", backend)

    async def _apply(self, change: StatusChange) -> None:
        scheduler = self.scheduler
        status = ganga_status(change.new)
        if status is None:
            scheduler.count_rejection(change.backend, change.job_id, "unknown_state", f"Ganga status {change.new!r}")
            return
        if change.outputdir:
            self.outputdirs[change.job_id] = change.outputdir
        await self._lane_for(change.backend)
        job = scheduler.jobs.get(change.job_id)
        if job is None:
            job = job_from_change(change, status)
            scheduler.track(job, source="restore" if change.source == "restore" else "submit")
        elif change.source == "restore":
            return  # seen through the hook already; the hook's news is newer
        if job.status != status:
            report = StatusReport(change.job_id, status, info=_info(change), exit_code=change.exit_code)
            scheduler.apply_report(job, report, change.source, change.op_id)
        if change.job_id in self._exited_early and job.status.is_active:
            self._exited_early.discard(change.job_id)
            scheduler.refresh_now(change.job_id)

    def _process_ended(self, job_id: str) -> None:
        """A Local wrapper ended: poll its job (or a split job's subjobs) now, ahead of the queue."""
        scheduler = self.scheduler
        job = scheduler.jobs.get(job_id)
        targets = [
            other.job_id
            for other in scheduler.jobs.values()
            if other.group == job_id and other.status.is_active and other.job_id != job_id
        ]
        if job is not None and (job.status.is_active or not targets):
            targets.append(job_id)
        for target in targets:
            tracked = scheduler.jobs.get(target)
            if tracked is not None and tracked.status.is_active:
                scheduler.refresh_now(target)
            else:
                # Its "submitted" change is still on its way.
                self._exited_early.add(target)
