"""A monitoring session: state directory, backends, scheduler and workload in one piece.

The simulated session behind ``ganga-monitor-tui --demo``. It keeps its jobs in the
state directory's SQLite store; started again on the same directory it resumes the jobs
it had instead of submitting new ones.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from ._bus import EventBus
from ._lane import SchedulerConfig
from ._model import Job, JobStatus
from ._outputs import OutputSink
from ._scheduler import Scheduler
from ._store import SessionStore
from .backends._base import Backend, Capabilities
from .backends.dirac_sim import DEFAULT_CAPABILITIES as DIRAC_CAPABILITIES
from .backends.dirac_sim import DiracSimBackend
from .backends.local import LocalBackend
from .backends.slurm import SlurmBackend, SlurmCommands
from .sim._dirac_client import DiracSimProcess
from .sim._dirac_service import DiracSimConfig
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
    """

    def __init__(self, config: SessionConfig, bus: EventBus | None = None) -> None:
        self.config = config
        self.bus = bus or EventBus()
        self.state_dir = Path(config.state_dir)
        self.store: SessionStore | None = None
        self.scheduler: Scheduler | None = None
        self.dirac_service: DiracSimProcess | None = None
        self.diracx: Any = None
        """The local DiracX demo (``monitor_core.sim.diracx_demo.DiracxDemo``), if one runs."""
        self._diracx_backend: Backend | None = None
        self.resumed = False
        self.planned = 0
        self._started = 0.0

    async def __aenter__(self) -> MonitorSession:
        self._started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = SessionStore(self.state_dir / "session.sqlite")
        try:
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
        config = self.config
        restored = self.store.load_jobs()
        self.resumed = bool(restored)
        dirac_port = config.dirac_port
        embedded_dirac_lost = False
        if any(name.startswith("dirac-sim") for name in config.backends) and dirac_port is None:
            self.dirac_service = DiracSimProcess(
                DiracSimConfig(
                    latency_median=config.dirac_latency,
                    error_rate=config.dirac_error_rate,
                    hang_rate=config.dirac_hang_rate,
                    seed=config.seed,
                )
            )
            dirac_port = await self.dirac_service.start()
            embedded_dirac_lost = self.resumed
        if "diracx" in config.backends:
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
        await self.scheduler.__aenter__()
        if self.resumed:
            self.planned = int(self.store.get_meta("planned") or len(restored))
            self._restore(restored, embedded_dirac_lost)
        else:
            # A real DiracX installation is watched, never given demo jobs.
            workload_backends = tuple(b for b in config.backends if b != "diracx" or not config.diracx_url)
            specs = generate_workload(
                WorkloadConfig(
                    jobs=config.jobs if workload_backends else 0,
                    backends=workload_backends,
                    mean_duration=config.mean_duration,
                    local_mean_duration=config.local_mean_duration,
                    failure_rate=config.failure_rate,
                    seed=config.seed,
                )
            )
            if self.diracx is not None:
                self.diracx.expect([s for s in specs if s.backend == "diracx"])
            self.planned = len(specs)
            self.store.set_meta("planned", str(self.planned))
            await self.scheduler.submit(specs)
        if config.diracx_url and self._diracx_backend is not None:
            from .sim.diracx_demo import adopt_active_jobs

            adopted = await adopt_active_jobs(self._diracx_backend)  # type: ignore[arg-type]
            known = set(self.scheduler.jobs)
            for job in adopted:
                if job.job_id not in known:
                    self.scheduler.track(job, source="restore")
                    self.planned += 1

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

    def _restore(self, restored: list[Job], embedded_dirac_lost: bool) -> None:
        assert self.scheduler is not None
        assert self.store is not None
        collected = self.store.collected_outputs()
        self.scheduler.outputs_collected.update(collected)
        for job in restored:
            if job.backend not in self.scheduler.lanes:
                log.error("job %s belongs to backend %s, which this session does not run", job.job_id, job.backend)
                continue
            if embedded_dirac_lost and job.backend.startswith("dirac-sim") and job.status.is_active:
                # The simulated grid died with the previous session: say so, do not guess.
                job.status, job.info = JobStatus.UNKNOWN, "the embedded simulated grid ended with the session"
            self.scheduler.track(job, source="restore")

    async def _stop(self, reason: str) -> None:
        if self.scheduler is not None:
            await self.scheduler.aclose(reason)
        if self.dirac_service is not None:
            await self.dirac_service.stop()
        if self.diracx is not None:
            await self.diracx.stop()
        if self.store is not None:
            self.store.close()

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
