"""The workloads: what runs where, for how long, and which faults strike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .lanes import HEADLINE_LANE, SCALE_LANES, LaneSpec, Lifetimes

MODELS = ("legacy", "ganga-async", "threads", "asyncio", "processes")
OURS = ("threads", "asyncio", "processes")


@dataclass(frozen=True, slots=True)
class Workload:
    """One table: the same jobs and services for every model in ``models``."""

    name: str
    group: str
    """headline, scale or faults."""
    lanes: tuple[LaneSpec, ...]
    jobs: int
    lifetimes: Lifetimes
    window: float
    warmup: float = 0.0
    tail: float = 0.0
    """Jobs ending this close to the window's end are not counted (every model gets the same set)."""
    until_swept: bool = False
    fault: dict[str, Any] | None = None
    models: tuple[str, ...] = MODELS
    baseline: str | None = None
    """For a fault workload: the scale workload it is compared with."""
    extra: dict[str, Any] = field(default_factory=dict)

    def per_lane(self) -> list[int]:
        """Jobs on each lane (spread evenly)."""
        base, rest = divmod(self.jobs, len(self.lanes))
        return [base + (1 if i < rest else 0) for i in range(len(self.lanes))]


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


def _tail() -> float:
    # Our slowest lane confirms a job once per interval; allow that plus two calls.
    return max(lane.interval + 2 * lane.mean_latency(lane.max_bulk) for lane in SCALE_LANES)


def scale(jobs: int, *, window: float, warmup: float, models: tuple[str, ...] = MODELS) -> Workload:
    share = min(0.2, 3000 / jobs)
    return Workload(
        name=f"scale-{jobs}",
        group="scale",
        lanes=SCALE_LANES,
        jobs=jobs,
        lifetimes=Lifetimes(finishing_share=share, first_end=warmup + 3.0, last_end=window + 3.0),
        window=window,
        warmup=warmup,
        tail=_tail(),
        models=models,
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
        fault={"lane": "grid", "settings": settings, "at": warmup / 2, "kind": kind},
        models=models,
        baseline=base.name,
    )


def plan(quick: bool) -> list[Workload]:
    """Every workload of a quick or a full run, in running order."""
    if quick:
        return [
            headline(),
            scale(1000, window=10.0, warmup=2.0),
            fault("fail", 1000, window=10.0, warmup=2.0, models=("asyncio",)),
        ]
    return [
        headline(),
        scale(1000, window=45.0, warmup=8.0),
        # Long enough for both old models to finish a sweep, so their lag p99 is measured, not bounded.
        scale(10_000, window=150.0, warmup=8.0),
        scale(100_000, window=45.0, warmup=10.0),
        fault("hang", 10_000, window=45.0, warmup=8.0),
        fault("fail", 10_000, window=45.0, warmup=8.0),
    ]
