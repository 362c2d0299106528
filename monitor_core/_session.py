"""A monitoring session: state directory, backends, scheduler and workload in one piece.

The simulated session behind ``ganga-monitor-tui --demo``. It keeps its jobs in the
state directory's SQLite store; started again on the same directory it resumes the jobs
it had instead of submitting new ones. Its simulated grid lives beside it, not inside it:
started in its own process group with its address in the state directory, it outlives a
killed session as a real grid does, and the resumed session finds it there again.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from ._bus import EventBus
from ._gc_pace import CollectionPace
from ._lane import SchedulerConfig
from ._model import Job, JobStatus
from ._outputs import OutputSink
from ._scheduler import Scheduler
from ._state_lock import StateDirectoryLock
from ._store import SessionStore
from .backends._base import Backend, Capabilities
from .backends.dirac_sim import DEFAULT_CAPABILITIES as DIRAC_CAPABILITIES
from .backends.dirac_sim import DiracSimBackend
from .backends.local import LocalBackend
from .backends.slurm import SlurmBackend, SlurmCommands
from .sim._dirac_service import DiracSimConfig
from .sim._grid import DiracGrid
from .sim._workload import WorkloadConfig, generate_workload

__all__ = ["KNOWN_BACKENDS", "MonitorSession", "SessionConfig", "SessionSummary"]

log = logging.getLogger(__name__)

KNOWN_BACKENDS = ("local", "dirac-sim", "dirac-sim-async", "slurm", "diracx")
DiracClientKind = Literal["process", "thread"]


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """What a simulated session runs, and against what.

    Raises:
        ValueError: on construction, when a value is out of range.
    """

    state_dir: Path
    jobs: int = 3000
    backends: tuple[str, ...] = ("local", "dirac-sim")
    dirac_latency: float = 0.3
    """Median seconds per call to the simulated DIRAC service."""
    dirac_error_rate: float = 0.0
    dirac_hang_rate: float = 0.0
    dirac_port: int | None = None
    """Port of a simulated service that runs on its own (it outlives the session)."""
    dirac_client: DiracClientKind = "process"
    """How the blocking DIRAC client is isolated: subprocess workers or threads."""
    diracx_url: str | None = None
    """A real DiracX installation the ``diracx`` backend watches (its unfinished jobs, with the
    ``dirac login`` tokens) instead of a local service with pilots running demo jobs."""
    mean_duration: float = 8.0
    local_mean_duration: float = 2.0
    failure_rate: float = 0.1
    local_max_running: int = 64
    poll_interval: float | None = None
    """Override of every backend's target poll interval, seconds."""
    seed: int = 7
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    grid_idle_exit: float = 300.0
    """Seconds without a request after which a simulated grid left behind by a session stops."""

    def __post_init__(self) -> None:
        if self.jobs < 0:
            raise ValueError("--jobs must be zero or more")
        unknown = [name for name in self.backends if name not in KNOWN_BACKENDS]
        if unknown or not self.backends:
            raise ValueError(
                f"unknown backend(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(KNOWN_BACKENDS)}"
            )
        for name in ("dirac_error_rate", "dirac_hang_rate", "failure_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name.replace('_', '-')} must be between 0 and 1")
        if self.dirac_latency < 0 or not math.isfinite(self.dirac_latency):
            raise ValueError("latency must be a finite, non-negative number of seconds")
        if self.poll_interval is not None and not self.poll_interval > 0:
            raise ValueError("the poll interval must be positive")


@dataclass(frozen=True, slots=True)
class BackendSummary:
    """One backend's figures at the end of a run."""

    name: str
    jobs: int
    lag_p50: float
    lag_p99: float
    lag_max: float
    calls: int
    retries: int
    rejections: int
    results_p50: float = 0.0
    """End to collected: seconds from a job's move to ``completing`` until its outputs were settled."""
    results_p99: float = 0.0
    results_max: float = 0.0
    results_jobs: int = 0
    """Jobs the end-to-collected figures are taken over."""


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """How a run ended: counts per state, lag, calls, and whether anything went wrong."""

    jobs: int
    planned: int
    by_status: dict[str, int]
    backends: tuple[BackendSummary, ...]
    operations: int
    retries: int
    rejections: int
    outputs_collected: int
    lost: tuple[str, ...]
    """Jobs that are not final, or finished without their output."""
    misstated: tuple[str, ...]
    """Jobs whose final status differs from the outcome the workload intended."""
    elapsed: float

    @property
    def ok(self) -> bool:
        """Every job accounted for and truly stated."""
        return not self.lost and not self.misstated and self.jobs == self.planned

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-able data."""
        data = asdict(self)
        data["ok"] = self.ok
        return data


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(fraction * 100) - 1))]


def _slurm_conf() -> Path | None:
    """The cluster ``slurm`` jobs go to: ``$SLURM_CONF``, the system's, else ``scripts/slurm-local``'s."""
    if os.environ.get("SLURM_CONF") or Path("/etc/slurm/slurm.conf").exists():
        return None
    local = Path(os.environ.get("SLURM_LOCAL_DIR") or "/tmp/slurm-local") / "etc" / "slurm.conf"
    return local if local.exists() else None


class MonitorSession:
    """A simulated Ganga session being monitored, as an async context manager.

    Args:
        config: the session's shape.
        bus: an existing bus to publish on (a new one when ``None``).
        on_step: told, in a few words, each step of the start as it begins (the grid, the
            backends' clients, the jobs): at 100,000 jobs the start takes about 20 s, half of it
            submitting to the simulated grid, and a viewer waiting for it can say what it waits for.
    """

    def __init__(
        self, config: SessionConfig, bus: EventBus | None = None, *, on_step: Callable[[str], None] | None = None
    ) -> None:
        self.config = config
        self._on_step = on_step
        self.bus = bus or EventBus()
        self.state_dir = Path(config.state_dir)
        self.store: SessionStore | None = None
        self.scheduler: Scheduler | None = None
        self.grid: DiracGrid | None = None
        """The simulated grid in the state directory, when a ``dirac-sim`` backend runs."""
        self.diracx: Any = None
        """The local DiracX demo (``monitor_core.sim.diracx_demo.DiracxDemo``), if one runs."""
        self._diracx_backend: Backend | None = None
        self.resumed = False
        self.planned = 0
        self._started = 0.0
        self._lock = StateDirectoryLock(self.state_dir)
        self._all_tracked = False
        """Every job of the session is tracked (submitted or restored): the start completed."""
        self._grid_keepalive: asyncio.Task[None] | None = None
        self._gc_pace = CollectionPace()
        """Full garbage collections on the session's schedule once its start is done."""

    async def __aenter__(self) -> MonitorSession:
        """Start the session.

        Raises:
            StateDirectoryInUse: another live session holds the state directory.
        """
        self._started = time.monotonic()
        # Before anything touches the directory: a second session must change nothing.
        await asyncio.to_thread(self._lock.acquire)
        try:
            self.store = SessionStore(self.state_dir / "session.sqlite", publish=self.bus.publish)
            await self.store.open()
            await self._start()
        except BaseException:
            await self._stop("failed to start")
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop("session ended")

    async def _start(self) -> None:
        assert self.store is not None
        # From the start: drawing and submitting 100,000 jobs made full collections of up to
        # 0.9 s, on the loop or on the thread that drew them, holding the interpreter.
        self._gc_pace.start()
        config = self.config
        restored = await self.store.load_jobs()
        self.resumed = bool(restored)
        dirac_port = config.dirac_port
        grid_lost = False
        if any(name.startswith("dirac-sim") for name in config.backends) and dirac_port is None:
            self.grid = DiracGrid(
                self.state_dir / "grid",
                DiracSimConfig(
                    latency_median=config.dirac_latency,
                    error_rate=config.dirac_error_rate,
                    hang_rate=config.dirac_hang_rate,
                    seed=config.seed,
                ),
                idle_exit=config.grid_idle_exit,
            )
            self._step("launching the simulated DIRAC grid")
            dirac_port = await self.grid.find_or_start()
            self._grid_keepalive = asyncio.create_task(self.grid.keep_alive(), name="monitor.grid-keepalive")
            # A grid started anew knows the earlier jobs only through its journal.
            grid_lost = self.resumed and not self.grid.knows_earlier_jobs
        if "diracx" in config.backends:
            self._step("launching DiracX")
            await self._start_diracx()
        backends = self._make_backends(dirac_port or 0)
        self.scheduler = Scheduler(
            backends,
            bus=self.bus,
            outputs=OutputSink(self.state_dir / "outputs"),
            store=self.store,
            config=config.scheduler,
            session=self.state_dir.name,
        )
        self._step("launching the backends' clients")
        await self.scheduler.__aenter__()
        if self.resumed:
            self._step(f"restoring {len(restored):,} jobs")
            self.planned = int(await self.store.get_meta("planned") or len(restored))
            await self._restore(restored, grid_lost)
            if len(restored) < self.planned:
                await self._submit_unrecorded({job.name for job in restored})
        else:
            # A real DiracX installation is watched, never given demo jobs.
            workload_backends = tuple(b for b in config.backends if b != "diracx" or not config.diracx_url)
            workload = WorkloadConfig(
                jobs=config.jobs if workload_backends else 0,
                backends=workload_backends,
                mean_duration=config.mean_duration,
                local_mean_duration=config.local_mean_duration,
                failure_rate=config.failure_rate,
                seed=config.seed,
            )
            # Drawing 100,000 jobs takes seconds: off the loop, which already serves the grid's workers.
            self._step(f"preparing {workload.jobs:,} jobs")
            specs = await asyncio.to_thread(generate_workload, workload)
            if self.diracx is not None:
                self.diracx.expect([s for s in specs if s.backend == "diracx"])
            self.planned = len(specs)
            await self.store.set_meta("planned", str(self.planned))
            # The workload itself, so that a resume can tell which jobs were never recorded.
            await self.store.set_meta("workload", json.dumps(asdict(workload)))
            self._step(f"submitting {len(specs):,} jobs")
            await self.scheduler.submit(specs)
        if config.diracx_url and self._diracx_backend is not None:
            from .sim.diracx_demo import adopt_active_jobs

            adopted = await adopt_active_jobs(self._diracx_backend)  # type: ignore[arg-type]
            known = set(self.scheduler.jobs)
            for job in adopted:
                if job.job_id not in known:
                    self.scheduler.track(job, source="restore")
                    self.planned += 1
        self._all_tracked = True
        # Every job, spec and index made so far lives as long as the session: out of the
        # collector's sight, a full collection no longer walks them (a 5 s stall of the loop
        # at 100,000 jobs, measured). What the run makes later is collected on the pace's
        # schedule (full passes of 200-900 ms in the completion burst otherwise).
        gc.freeze()

    async def _submit_unrecorded(self, recorded: set[str]) -> None:
        """Submit the planned jobs an earlier session was killed before recording."""
        assert self.store is not None
        assert self.scheduler is not None
        text = await self.store.get_meta("workload")
        if text is None:
            log.error("%d planned jobs were never recorded and the workload is unknown", self.planned - len(recorded))
            return
        fields = json.loads(text)
        fields["backends"] = tuple(fields["backends"])
        missing = [spec for spec in generate_workload(WorkloadConfig(**fields)) if spec.name not in recorded]
        if missing:
            # Any of them the killed session did hand to a backend runs there unwatched; the
            # workload is only complete if each planned job is submitted and recorded once.
            log.warning("submitting %d planned jobs the earlier session was killed before recording", len(missing))
            await self.scheduler.submit(missing)

    def _step(self, what: str) -> None:
        log.info("start: %s", what)
        if self._on_step is not None:
            self._on_step(what)

    async def _start_diracx(self) -> None:
        """The ``diracx`` backend: a real installation, or a local service with its pilots.

        Raises:
            RuntimeError: the ``diracx`` extra is missing or the local service cannot start.
        """
        try:
            from .sim import diracx_demo
        except ImportError as exc:
            raise RuntimeError(
                f"the diracx backend needs the diracx extra (pip install 'ganga-monitor[diracx]'): {exc}"
            ) from exc
        config = self.config
        if config.diracx_url:
            self._diracx_backend = diracx_demo.watching_backend(config.diracx_url, poll_interval=config.poll_interval)
            return
        self.diracx = diracx_demo.DiracxDemo(
            poll_interval=config.poll_interval, mean_run_time=config.mean_duration, seed=config.seed
        )
        self._diracx_backend = await self.diracx.start()

    def _make_backends(self, dirac_port: int) -> list[Backend]:
        config = self.config
        backends: list[Backend] = []

        def tuned(caps: Capabilities) -> Capabilities:
            return caps if config.poll_interval is None else replace(caps, poll_interval=config.poll_interval)

        for name in config.backends:
            if name == "local":
                local = LocalBackend(self.state_dir / "local", max_running=config.local_max_running)
                local.capabilities = tuned(local.capabilities)
                backends.append(local)
            elif name == "dirac-sim":
                caps = tuned(DIRAC_CAPABILITIES)
                if config.dirac_client == "process":
                    backends.append(
                        DiracSimBackend.isolated(dirac_port, capabilities=caps, stderr=self.state_dir / "workers.log")
                    )
                else:
                    backends.append(DiracSimBackend.threaded(dirac_port, capabilities=caps))
            elif name == "dirac-sim-async":
                backends.append(DiracSimBackend.asynchronous(dirac_port, capabilities=tuned(DIRAC_CAPABILITIES)))
            elif name == "diracx" and self._diracx_backend is not None:
                backends.append(self._diracx_backend)
            elif name == "slurm":
                slurm = SlurmBackend(self.state_dir / "slurm", commands=SlurmCommands(slurm_conf=_slurm_conf()))
                slurm.capabilities = tuned(slurm.capabilities)
                backends.append(slurm)
        return backends

    async def _restore(self, restored: list[Job], grid_lost: bool) -> None:
        assert self.scheduler is not None
        assert self.store is not None
        collected = await self.store.collected_outputs()
        self.scheduler.outputs_collected.update(collected)
        known: list[Job] = []
        for job in restored:
            if job.backend not in self.scheduler.lanes:
                log.error("job %s belongs to backend %s, which this session does not run", job.job_id, job.backend)
                continue
            if grid_lost and job.backend.startswith("dirac-sim") and job.status.is_active:
                # The grid and its journal are gone: say so, do not guess.
                job.status, job.info = JobStatus.UNKNOWN, "the simulated grid lost its jobs before the session resumed"
            known.append(job)
        await self.scheduler.track_all(known, source="restore")

    async def _stop(self, reason: str) -> None:
        await self._gc_pace.aclose()
        if self.scheduler is not None:
            await self.scheduler.aclose(reason)
        if self._grid_keepalive is not None:
            self._grid_keepalive.cancel()
            await asyncio.gather(self._grid_keepalive, return_exceptions=True)
        if self.grid is not None:
            await self._leave_grid()
        if self.diracx is not None:
            await self.diracx.stop()
        if self.store is not None:
            await self.store.aclose()
        self._lock.release()

    async def _leave_grid(self) -> None:
        """Stop the grid once nothing of this session runs on it; else leave it for a resume."""
        assert self.grid is not None
        if self.scheduler is None or not self._all_tracked:
            # Started only part way: what is on the grid is unknown here, so a resume may need it.
            log.info("the simulated grid (pid %s) is left running for a resumed session", self.grid.pid)
            return
        jobs = self.scheduler.jobs.values()
        on_grid = sum(1 for job in jobs if job.backend.startswith("dirac-sim") and not job.status.is_final)
        if on_grid == 0:
            await self.grid.stop()
        else:
            log.info(
                "%d jobs still on the simulated grid (pid %s): it keeps running for a resumed session, "
                "and stops after %.0f s without one",
                on_grid,
                self.grid.pid,
                self.config.grid_idle_exit,
            )

    def summary(self) -> SessionSummary:
        """Figures of the run so far, and the audit of every job."""
        assert self.scheduler is not None
        scheduler = self.scheduler
        by_status = Counter(job.status.value for job in scheduler.jobs.values())
        lost = []
        misstated = []
        for job in scheduler.jobs.values():
            if (
                not job.status.is_final
                or job.status == JobStatus.UNKNOWN
                or (job.status == JobStatus.COMPLETED and job.job_id not in scheduler.outputs_collected)
            ):
                lost.append(job.job_id)
            elif job.expected is not None and job.status != job.expected:
                misstated.append(job.job_id)
        backends = []
        for lane in scheduler.lanes.values():
            samples = list(lane.lag_samples)
            backends.append(
                BackendSummary(
                    name=lane.name,
                    jobs=sum(1 for job in scheduler.jobs.values() if job.backend == lane.name),
                    lag_p50=_percentile(samples, 0.5),
                    lag_p99=_percentile(samples, 0.99),
                    lag_max=max(samples, default=0.0),
                    calls=lane.calls_total,
                    retries=lane.retries_total,
                    rejections=lane.rejections_total,
                )
            )
        return SessionSummary(
            jobs=len(scheduler.jobs),
            planned=self.planned,
            by_status=dict(sorted(by_status.items())),
            backends=tuple(backends),
            operations=sum(lane.calls_total for lane in scheduler.lanes.values()),
            retries=sum(lane.retries_total for lane in scheduler.lanes.values()),
            rejections=scheduler.counters["rejections"],
            outputs_collected=len(scheduler.outputs_collected),
            lost=tuple(lost),
            misstated=tuple(misstated),
            elapsed=time.monotonic() - self._started,
        )
