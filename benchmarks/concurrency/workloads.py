"""The workloads: what runs where, for how long, and which faults strike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .lanes import EQUAL_INTERVAL, HEADLINE_LANE, SCALE_LANES, LaneSpec, Lifetimes

MODELS = ("legacy", "ganga-async", "threads", "asyncio", "processes")
REAL_MODELS = ("ganga-8.7.12", "drive")
OURS = ("threads", "asyncio", "processes")
GANGA_MODELS = ("legacy", "ganga-async")


@dataclass(frozen=True, slots=True)
class Workload:
    """One table: the same jobs and services for every model in ``models``."""

    name: str
    group: str
    """headline, scale, shipped, faults or activation."""
    lanes: tuple[LaneSpec, ...]
    jobs: int
    lifetimes: Lifetimes
    window: float
    """Headline: the longest wait for a sweep. Otherwise seconds after submission at which
    every model stops; every job ending ``tail`` seconds before it is counted for every model."""
    warmup: float = 0.0
    tail: float = 0.0
    until_swept: bool = False
    fault: dict[str, Any] | None = None
    models: tuple[str, ...] = MODELS
    baseline: str | None = None
    """For a fault workload: the scale workload it is compared with."""
    shipped: bool = False
    """Ganga's models poll at Ganga's shipped rates (rows labelled "as shipped"), not at the lanes' common interval."""
    activation: str = "staggered"
    """How the Ganga 8.7 loop first sees the backends: "staggered" (one registry scan apart,
    as when a user submits to one backend after another) or "together" (the same scan)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def per_lane(self) -> list[int]:
        """Jobs on each lane (spread evenly)."""
        base, rest = divmod(self.jobs, len(self.lanes))
        return [base + (1 if i < rest else 0) for i in range(len(self.lanes))]

    def intervals(self, model: str) -> dict[str, float]:
        """Seconds between two polls of a job, per lane, for ``model`` in this workload."""
        if self.shipped and model == "legacy":
            return {lane.name: 2.0 for lane in self.lanes}
        if self.shipped and model in GANGA_MODELS:
            return {lane.name: lane.ganga_rate for lane in self.lanes}
        return {lane.name: lane.interval for lane in self.lanes}


@dataclass(frozen=True, slots=True)
class RealWorkload:
    """Real jobs in a real Ganga 8.7.12 session (see :mod:`.ganga_real`): Local, or Dirac on the simulated grid."""

    name: str
    jobs: int
    interval: float
    backend: str = "Local"
    models: tuple[str, ...] = ("ganga-8.7.12", "drive")
    group: str = "real"


def headline() -> Workload:
    return Workload(
        name="headline",
        group="headline",
        lanes=(HEADLINE_LANE,),
        jobs=25,
        lifetimes=Lifetimes(finishing_share=0.0, first_end=0.0, last_end=0.0),
        window=60.0,
        until_swept=True,
    )


def _tail(shipped: bool = False) -> float:
    # Every model polls a job once per interval; allow two intervals plus two calls, so that
    # a model that keeps up is measured, not cut off.
    interval = max(lane.ganga_rate if shipped else lane.interval for lane in SCALE_LANES)
    return 2 * interval + 2 * max(lane.mean_latency(lane.max_bulk) for lane in SCALE_LANES)


def scale(
    jobs: int,
    *,
    window: float,
    warmup: float,
    models: tuple[str, ...] = MODELS,
    shipped: bool = False,
    activation: str = "staggered",
    name: str | None = None,
    tail: float | None = None,
) -> Workload:
    share = min(0.2, 3000 / jobs)
    tail = _tail(shipped) if tail is None else tail
    return Workload(
        name=name or f"scale-{jobs}",
        group="shipped" if shipped else "scale" if activation == "staggered" else "activation",
        lanes=SCALE_LANES,
        jobs=jobs,
        lifetimes=Lifetimes(finishing_share=share, first_end=warmup, last_end=window - tail),
        window=window,
        warmup=warmup,
        tail=tail,
        models=models,
        shipped=shipped,
        activation=activation,
    )


def fault(kind: str, jobs: int, *, window: float, warmup: float, models: tuple[str, ...] = MODELS) -> Workload:
    settings = {"hang_rate": 1.0} if kind == "hang" else {"error_rate": 0.5}
    base = scale(jobs, window=window, warmup=warmup, models=models)
    return Workload(
        name=f"faults-grid-{kind}-{jobs}",
        group="faults",
        lanes=SCALE_LANES,
        jobs=jobs,
        lifetimes=base.lifetimes,
        window=window,
        warmup=warmup,
        tail=base.tail,
        # From the moment monitoring starts (the service is healthy only while jobs are submitted).
        fault={"lane": "grid", "settings": settings, "at": 0.0, "kind": kind},
        models=models,
        baseline=base.name,
    )


def plan(quick: bool) -> list[Workload | RealWorkload]:
    """Every workload of a quick or a full run, in running order."""
    if quick:
        return [
            headline(),
            scale(1000, window=40.0, warmup=6.0),
            fault("fail", 1000, window=40.0, warmup=6.0, models=("ganga-async", "asyncio")),
            RealWorkload("local-real-20", 20, EQUAL_INTERVAL),
        ]
    old_and_asyncio = ("legacy", "ganga-async", "asyncio")
    return [
        headline(),
        scale(1000, window=50.0, warmup=8.0),
        # Ganga 8.7's loop needs up to 30 s to have a grid job's outputs at 10,000 jobs (two polls,
        # chunks one after another, finalisations queued behind its executor); with the default
        # tail of two intervals its last jobs were cut off by the end (a censored ">=" figure).
        # A 40 s tail lets every model report every counted job; the jobs end over the same
        # 52 s as before, so the load is unchanged.
        scale(10_000, window=100.0, warmup=8.0, tail=40.0),
        scale(100_000, window=60.0, warmup=10.0),
        fault("hang", 10_000, window=60.0, warmup=8.0, models=old_and_asyncio),
        fault("fail", 10_000, window=60.0, warmup=8.0, models=old_and_asyncio),
        scale(
            10_000,
            window=120.0,
            warmup=8.0,
            models=("legacy", "ganga-async"),
            shipped=True,
            name="scale-10000-as-shipped",
        ),
        scale(1000, window=50.0, warmup=8.0, models=("ganga-async",), activation="together", name="activation-1000"),
        RealWorkload("local-real-200", 200, EQUAL_INTERVAL),
        RealWorkload("dirac-real-40", 40, EQUAL_INTERVAL, backend="Dirac"),
    ]
