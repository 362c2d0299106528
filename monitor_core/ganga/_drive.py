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
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .._bus import EventBus
from .._lane import SchedulerConfig
from .._model import JobStatus
from .._outputs import OutputSink
from .._policy import AdaptiveInterval
from .._scheduler import Scheduler
from ..backends import slurm
from ..backends._base import Capabilities, StatusReport
from ..backends.slurm import SlurmCommands
from ._backend import GangaBackend, info_of
from ._changes import StatusChange, ganga_status, job_from_change
from ._dirac import GANGA_DIRAC, DiracClientRunner, DiracSettings, GangaDiracBackend, dirac_settings
from ._dirac_commands import DiracCommandClient
from ._exits import ExitWatcher
from ._slurm import GANGA_SLURM, GangaSlurmBackend

__all__ = ["DriveConfig", "GangaDriver"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DriveConfig:
    """How drive mode treats Ganga's backends. Times are seconds.

    ``poll_intervals`` overrides a backend's target interval; a backend not named there uses
    Ganga's own ``[PollThread]`` rate for it, except Local, whose status file is cheap to read
    and whose exits arrive as events anyway, and Slurm, whose jobs are asked about in bulk.
    """

    poll_intervals: Mapping[str, float] = field(default_factory=dict)
    local_interval: float = 2.0
    call_timeout: float = 60.0
    max_concurrency: int = 2
    max_batch: int = 100
    scheduler: SchedulerConfig = field(default_factory=lambda: SchedulerConfig(breaker_threshold=3))
    auto_resubmit: bool = True
    slurm: SlurmCommands | None = field(default_factory=lambda: SlurmCommands(timeout=10.0))
    """How Ganga's ``Slurm`` jobs are asked about in bulk; ``None`` polls them one status file at a time."""
    slurm_vanish_grace: float = 30.0
    """Seconds a job Slurm says has ended may wait for its exit code to appear before it is failed."""
    dirac: bool = True
    """Ask DIRAC about Ganga's ``Dirac`` jobs in bulk through its client in a subprocess, and
    finalise them as output fetches; ``False`` runs Ganga's own update on them instead."""
    dirac_max_batch: int = 500
    """Most jobs one DIRAC status call asks about."""
    dirac_fetch_concurrency: int = 32
    """Finalisations (output sandbox downloads) of Dirac jobs in flight at once: a poll finds
    the jobs that ended over an interval, and each waits on DIRAC, not on this machine."""
    policy: AdaptiveInterval = field(default_factory=lambda: AdaptiveInterval(slow=1.0))
    """How often each job is confirmed. Ganga's jobs are asked about in bulk, so an idle job
    costs little: none is confirmed less often than its backend's interval, as in Ganga's loop."""


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
            [],
            bus=bus,
            outputs=OutputSink(self._outputs_dir),
            config=config.scheduler,
            session=session,
            policy=config.policy,
        )
        self._ganga_poll_rate = ganga_poll_rate
        self._max_resubmit_fraction = max_resubmit_fraction if config.auto_resubmit else None
        self._changes: asyncio.Queue[StatusChange] = asyncio.Queue()
        self._consumer: asyncio.Task[None] | None = None
        self._exits: ExitWatcher | None = None
        self._exited_early: set[str] = set()
        self._masters: set[str] = set()
        """Split jobs (the groups of tracked subjobs)."""
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

    def _bulk_slurm_commands(self, backend: str) -> SlurmCommands | None:
        """How to ask Slurm about this backend's jobs in bulk, or ``None`` for Ganga's own per-job update."""
        return self.config.slurm if backend == GANGA_SLURM else None

    def _bulk_dirac_settings(self, backend: str) -> DiracSettings | None:
        """Ganga's DIRAC settings when this backend's jobs are asked about through DIRAC's client in bulk."""
        if backend != GANGA_DIRAC or not self.config.dirac:
            return None
        settings = dirac_settings()
        if settings is None or not settings.env_json:
            log.warning("[DIRAC]DiracEnvJSON is not set: Ganga's own update monitors Dirac jobs one chunk at a time")
            return None
        return settings

    def _dirac_capabilities(self) -> Capabilities:
        config = self.config
        return Capabilities(
            max_batch=config.dirac_max_batch,
            max_concurrency=config.max_concurrency,
            fetch_concurrency=config.dirac_fetch_concurrency,
            blocking=True,
            isolated=True,
            poll_interval=config.poll_intervals.get(GANGA_DIRAC, self._ganga_poll_rate(GANGA_DIRAC)),
            call_timeout=config.call_timeout,
            fetches_output=True,
        )

    def _capabilities(self, backend: str) -> Capabilities:
        config = self.config
        bulk_slurm = self._bulk_slurm_commands(backend) is not None
        if backend in config.poll_intervals:
            interval = config.poll_intervals[backend]
        elif backend == "Local":
            interval = config.local_interval
        elif bulk_slurm:
            interval = slurm.DEFAULT_CAPABILITIES.poll_interval
        else:
            interval = self._ganga_poll_rate(backend)
        return Capabilities(
            max_batch=slurm.DEFAULT_CAPABILITIES.max_batch if bulk_slurm else config.max_batch,
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

        def late(changes: list[StatusChange]) -> None:
            if changes and not loop.is_closed():
                loop.call_soon_threadsafe(self.post_many, changes)

        resubmit = self._max_resubmit_fraction
        lane_backend: GangaBackend
        slurm_commands = self._bulk_slurm_commands(backend)
        dirac = self._bulk_dirac_settings(backend)
        capabilities = self._capabilities(backend) if dirac is None else self._dirac_capabilities()
        executor = concurrent.futures.ThreadPoolExecutor(
            # Spare threads, so one hung call does not take a slot for good.
            max_workers=capabilities.max_concurrency + capabilities.fetch_concurrency + 2,
            thread_name_prefix=f"ganga-monitor[{backend}]",
        )
        if dirac is not None:
            lane_backend = GangaDiracBackend(
                backend,
                capabilities,
                executor=executor,
                late_changes=late,
                max_resubmit_fraction=resubmit,
                runner=DiracClientRunner(
                    dirac.env_json, _proxy_location(), size=capabilities.max_concurrency, name=backend
                ),
                settings=dirac,
                commands=DiracCommandClient(dirac.env_json, _proxy_location(), name=backend),
            )
        elif slurm_commands is not None:
            lane_backend = GangaSlurmBackend(
                backend,
                capabilities,
                executor=executor,
                late_changes=late,
                max_resubmit_fraction=resubmit,
                commands=slurm_commands,
                vanish_grace=self.config.slurm_vanish_grace,
            )
        else:
            lane_backend = GangaBackend(
                backend, capabilities, executor=executor, late_changes=late, max_resubmit_fraction=resubmit
            )
        await self.scheduler.add_backend(lane_backend)
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
        if change.group:
            self._masters.add(change.group)
        if job.status == JobStatus.COMPLETING and status.is_final and change.job_id in self._masters:
            # A split job whose lane finalises its subjobs one by one: Ganga settled it from them.
            job.outcome = status
            await scheduler.output_collected(job, (), change.op_id)
        elif job.status != status:
            report = StatusReport(change.job_id, status, info=info_of(change), exit_code=change.exit_code)
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


def _proxy_location() -> str:
    """Where Ganga's default DIRAC proxy is, for DIRAC's client in the lane's worker."""
    try:
        from GangaCore.GPIDev.Credentials import credential_store
        from GangaDirac.Lib.Credentials.DiracProxy import DiracProxy

        return str(credential_store[DiracProxy()].location)
    except Exception:  # noqa: BLE001 - no proxy yet, or the plugin refuses: DIRAC's client looks for its own
        return os.environ.get("X509_USER_PROXY", "")
