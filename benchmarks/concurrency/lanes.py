"""The simulated backends ("lanes") a benchmark workload runs on, and its jobs' lifetimes.

Every lane is its own simulated DIRAC service process (``monitor_core.sim.dirac_server``)
with its own latency and bulk limit. Each model sees the same lanes: ours through
``DiracSimBackend``; the two Ganga models through the sim's blocking and asyncio clients.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from monitor_core.sim import DiracSimConfig

LONG_RUNNING: Final = 1.0e6
"""Duration of a job that stays active for the whole measurement."""


@dataclass(frozen=True, slots=True)
class LaneSpec:
    """One simulated backend and how each model treats it.

    ``interval`` is the poll interval every model uses in the equal-interval rows;
    ``concurrency`` configures our scheduler's lane; ``ganga_rate`` is Ganga's shipped
    ``[PollThread]`` rate for the backend kind (``GangaCore/__init__.py:458-463``), used only in
    the rows labelled "as shipped"; ``ganga_bulk`` whether Ganga asks the service for many jobs in
    one call (DIRAC does; Local and Batch read one status file per job from local disk).
    """

    name: str
    kind: str
    """Ganga backend kind this lane stands for: Dirac, Batch or Local."""
    latency_median: float
    latency_sigma: float
    latency_per_job: float
    max_bulk: int
    interval: float
    concurrency: int
    ganga_rate: float
    ganga_bulk: bool
    call_timeout: float = 5.0
    output_latency: float = 0.02

    def sim_config(self, seed: int) -> DiracSimConfig:
        """The service's configuration: no queueing, so a job's end time is known exactly."""
        return DiracSimConfig(
            latency_median=self.latency_median,
            latency_sigma=self.latency_sigma,
            latency_per_job=self.latency_per_job,
            max_bulk=self.max_bulk,
            queue_time=0.0,
            completing_time=0.0,
            stall_rate=0.0,
            output_latency=self.output_latency,
            seed=seed,
        )

    def mean_latency(self, batch: int) -> float:
        """Expected duration of one call carrying ``batch`` ids (mean of the log-normal)."""
        return self.latency_median * math.exp(self.latency_sigma**2 / 2) + batch * self.latency_per_job

    def sweep_bound(self, jobs: int) -> float:
        """Theoretical full-sweep time: ceil(N / batch) / concurrency x one call's latency."""
        if jobs == 0:
            return 0.0
        calls = math.ceil(jobs / self.max_bulk)
        return math.ceil(calls / self.concurrency) * self.mean_latency(min(jobs, self.max_bulk))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


EQUAL_INTERVAL: Final = 5.0
"""Seconds between two polls of a job, for every model on every lane in the comparison rows."""

HEADLINE_LANE: Final = LaneSpec(
    name="dirac-sim",
    kind="Dirac",
    # 25 one-job calls one after another take 16 s: 0.64 s per call.
    latency_median=0.64,
    latency_sigma=0.05,
    latency_per_job=0.0,
    max_bulk=500,
    interval=10.0,
    concurrency=4,
    ganga_rate=50.0,
    ganga_bulk=True,
)

SCALE_LANES: Final = (
    LaneSpec(
        name="grid",
        kind="Dirac",
        latency_median=0.2,
        latency_sigma=0.2,
        latency_per_job=0.0001,
        max_bulk=500,
        interval=EQUAL_INTERVAL,
        concurrency=8,
        ganga_rate=50.0,
        ganga_bulk=True,
    ),
    LaneSpec(
        name="batch",
        kind="Batch",
        latency_median=0.05,
        latency_sigma=0.2,
        latency_per_job=0.00005,
        max_bulk=400,
        interval=EQUAL_INTERVAL,
        concurrency=4,
        ganga_rate=20.0,
        ganga_bulk=False,
    ),
    LaneSpec(
        name="local",
        kind="Local",
        latency_median=0.005,
        latency_sigma=0.2,
        latency_per_job=0.00001,
        max_bulk=250,
        interval=EQUAL_INTERVAL,
        concurrency=4,
        ganga_rate=10.0,
        ganga_bulk=False,
    ),
)


@dataclass(frozen=True, slots=True)
class Lifetimes:
    """Which jobs end during the measurement, and when (seconds after submission)."""

    finishing_share: float
    first_end: float
    last_end: float
    seed: int = 11

    def durations(self, lane: str, count: int) -> list[float]:
        """Reproducible durations of a lane's ``count`` jobs (same in every process)."""
        rng = random.Random(f"{lane}:{self.seed}")
        out = []
        for _ in range(count):
            if rng.random() < self.finishing_share:
                out.append(round(rng.uniform(self.first_end, self.last_end), 3))
            else:
                out.append(LONG_RUNNING)
        return out


@dataclass(slots=True)
class Submitted:
    """Where a lane's jobs are: its service port and the DIRAC ids handed out."""

    lane: LaneSpec
    port: int
    first_id: int
    count: int
    submitted_at: list[tuple[int, float]] = field(default_factory=list)
    """(first job index of a chunk, wall time its submission was acknowledged)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "lane": self.lane.to_dict(),
            "port": self.port,
            "first_id": self.first_id,
            "count": self.count,
            "submitted_at": self.submitted_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Submitted:
        return cls(
            lane=LaneSpec(**data["lane"]),
            port=int(data["port"]),
            first_id=int(data["first_id"]),
            count=int(data["count"]),
            submitted_at=[(int(a), float(b)) for a, b in data["submitted_at"]],
        )
