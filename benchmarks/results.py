"""Results lag: from a job's end at its service to its outputs in the session.

``python -m benchmarks.results`` runs three workloads against a simulated DIRAC service
(its own process, DIRAC's latency and output sandboxes) that allows a number of calls a
minute, with our scheduler and, for comparison, the models of Ganga 8.7's asyncio loop and
of the legacy ThreadPool loop (``benchmarks.concurrency``):

* **burst**: N jobs end within 10 s, beside long-running jobs that keep being polled;
  end-to-collected per job, the time to collect everything against the allowance's bound
  (queued outputs / the fetch rate the allowance leaves after status polls), and status lag
  p99 against the same run with no burst (the same jobs, none ending);
* **steady**: jobs end at a constant rate below the allowance; end-to-collected p99 against
  one poll interval plus one fetch latency;
* **faults**: the burst with 20 % of calls failing and 2 % hanging: time to collect all
  against the fault-free burst, and that nothing is lost or collected twice.

It prints a table and writes a plot (``screenshots/results-lag.png``; ``--quick`` writes
under ``benchmarks/results/``) and the raw figures as JSON beside it. The Ganga models do
not keep to the allowance (Ganga has none) and are cut off after a window.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import random
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from monitor_core import (
    EventBus,
    Job,
    JobChanged,
    JobStatus,
    LagSampled,
    OutputSink,
    Scheduler,
    SchedulerConfig,
    Subscription,
)
from monitor_core.backends import Capabilities
from monitor_core.backends.dirac_sim import DiracSimBackend
from monitor_core.sim import DiracSimProcess

from .concurrency.child import build_model
from .concurrency.lanes import LONG_RUNNING, LaneSpec, Submitted
from .concurrency.orchestrate import submit_lane
from .concurrency.recorder import Recorder, percentile

ROOT = Path(__file__).resolve().parent.parent
FINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.KILLED})
FINISHED = frozenset({JobStatus.COMPLETING, *FINAL})

LANE = LaneSpec(
    name="grid",
    kind="Dirac",
    latency_median=0.3,
    latency_sigma=0.25,
    latency_per_job=0.0004,
    max_bulk=500,
    interval=10.0,
    concurrency=4,
    ganga_rate=50.0,
    ganga_bulk=True,
    call_timeout=20.0,
    output_latency=0.2,
)
"""DIRAC's shape as the demo simulates it: 0.3 s calls, 0.2 s sandbox downloads, bulk 500, 10 s interval."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """One workload: who ends when, on what service, watched for how long."""

    name: str
    ending: int
    """Jobs that end during the run."""
    first_end: float
    last_end: float
    long_running: int
    """Jobs that stay active for the whole run (status lag is measured on them)."""
    allowance: float
    error_rate: float = 0.0
    hang_rate: float = 0.0
    window: float = 240.0
    """Longest wait for every output, seconds after submission."""

    def durations(self, seed: int = 11) -> list[float]:
        rng = random.Random(f"{self.name}:{seed}")
        ends = [rng.uniform(self.first_end, self.last_end) for _ in range(self.ending)]
        return [round(end, 3) for end in ends] + [LONG_RUNNING] * self.long_running


def scenarios(quick: bool) -> list[Scenario]:
    if quick:
        burst = Scenario("burst", 600, 5.0, 15.0, 400, allowance=600.0, window=150.0)
        return [
            replace(burst, name="no burst", ending=0, long_running=1000, window=30.0),
            burst,
            Scenario("steady", 150, 5.0, 35.0, 200, allowance=600.0, window=90.0),
            replace(burst, name="faults", error_rate=0.2, hang_rate=0.02, window=240.0),
        ]
    burst = Scenario("burst", 3000, 5.0, 15.0, 2000, allowance=3000.0, window=240.0)
    return [
        replace(burst, name="no burst", ending=0, long_running=5000, window=60.0),
        burst,
        Scenario("steady", 600, 5.0, 65.0, 1000, allowance=3000.0, window=150.0),
        replace(burst, name="faults", error_rate=0.2, hang_rate=0.02, window=360.0),
    ]


# -- one run ---------------------------------------------------------------------------------


class Watch:
    """Reads the bus: when each job was first seen finished and when it was settled, and lag samples."""

    def __init__(self, jobs: int) -> None:
        self.detected = [math.nan] * jobs
        self.settled = [math.nan] * jobs
        self.settle_count = [0] * jobs
        self.collect_errors: dict[int, str] = {}
        self.status_lag: list[tuple[float, float]] = []
        self.results_lag: list[tuple[float, float]] = []
        self.fetch_limit: list[tuple[float, int]] = []
        self.collect_bound: list[tuple[float, float]] = []

    async def consume(self, subscription: Subscription) -> None:
        async for event in subscription:
            if isinstance(event, JobChanged):
                index = int(event.job_id) - 1
                if event.new in FINISHED and math.isnan(self.detected[index]):
                    self.detected[index] = event.at
                if event.old == JobStatus.COMPLETING and event.new in FINAL:
                    # Outputs in the session: collected, or failed to collect with a reason.
                    self.settle_count[index] += 1
                    self.settled[index] = event.at
                    if event.collect_error:
                        self.collect_errors[index] = event.collect_error
            elif isinstance(event, LagSampled):
                record = event.backend
                self.status_lag.append((event.at, record.lag))
                self.results_lag.append((event.at, record.results_lag))
                self.fetch_limit.append((event.at, record.fetch_limit))
                if record.collect_bound is not None:
                    self.collect_bound.append((event.at, record.collect_bound))


def ours_backend(port: int, allowance: float) -> DiracSimBackend:
    caps = Capabilities(
        max_batch=LANE.max_bulk,
        max_concurrency=LANE.concurrency,
        fetch_concurrency=8,
        poll_interval=LANE.interval,
        call_timeout=LANE.call_timeout,
        max_calls_per_minute=allowance,
    )
    return DiracSimBackend.asynchronous(port, name=LANE.name, capabilities=caps)


async def run(scenario: Scenario, model: str, seed: int = 3) -> dict[str, Any]:
    """Submit the scenario's jobs to a fresh service and watch ``model`` collect their outputs."""
    sim = replace(LANE.sim_config(seed), error_rate=scenario.error_rate, hang_rate=scenario.hang_rate)
    durations = scenario.durations()
    jobs = len(durations)
    service = DiracSimProcess(sim)
    await service.start()
    workdir = Path(tempfile.mkdtemp(prefix="bench-results-"))
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    watch = Watch(jobs)
    subscription = bus.subscribe(max_pending=5_000_000, hard_limit=5_000_000, name="benchmark")
    consumer = asyncio.create_task(watch.consume(subscription))
    # Submission sees no faults: only monitoring is measured under them.
    await service.client().call("configure", {"error_rate": 0.0, "hang_rate": 0.0})
    submitted = Submitted(lane=LANE, port=service.port, first_id=0, count=jobs)
    await submit_lane(service, submitted, durations)
    await service.client().call("configure", {"error_rate": scenario.error_rate, "hang_rate": scenario.hang_rate})
    start = submitted.submitted_at[0][1]
    finish = [start + duration for duration in durations]
    ending = [i for i, duration in enumerate(durations) if duration < LONG_RUNNING]
    loop_lags: list[float] = []
    ticker = asyncio.create_task(_tick(loop_lags))
    scheduler: Scheduler | None = None
    ganga: Any = None
    try:
        if model == "ours":
            scheduler = Scheduler(
                [ours_backend(service.port, scenario.allowance)],
                bus=bus,
                outputs=OutputSink(workdir / "outputs"),
                config=SchedulerConfig(drain_timeout=2.0),
                session="bench-results",
            )
            await scheduler.__aenter__()
            now = time.time()
            await scheduler.track_all(
                [
                    Job(
                        job_id=str(k + 1),
                        backend=LANE.name,
                        group="burst" if durations[k] < LONG_RUNNING else "long",
                        backend_id=str(submitted.first_id + k),
                        status=JobStatus.RUNNING,
                        status_since=now,
                        last_confirmed=now,
                    )
                    for k in range(jobs)
                ],
                source="restore",
            )
        else:
            from array import array

            recorder = Recorder(array("d", finish), array("B", bytes(jobs)), 1)
            # At the same poll interval as ours: the comparison is of the loops, not of their rates.
            spec = {"intervals": {LANE.name: LANE.interval}, "status_dir": str(workdir / "status")}
            ganga = build_model(model, [submitted], bus, recorder, workdir, spec)
            await ganga.start()
            await ganga.track()
        deadline = start + scenario.window
        while time.time() < deadline:
            if ending and all(not math.isnan(watch.settled[i]) for i in ending):
                break
            if not ending and time.time() >= deadline:
                break
            await asyncio.sleep(0.25)
        ended = time.time()
        hedges = fetch_calls = calls = 0
        if scheduler is not None:
            lane = scheduler.lanes[LANE.name]
            hedges, fetch_calls, calls = lane.hedges_total, lane.fetches_total, lane.calls_total
            collected = scheduler.counters["outputs_collected"]
        else:
            collected = sum(1 for i in ending if not math.isnan(watch.settled[i]))
    finally:
        ticker.cancel()
        if scheduler is not None:
            await scheduler.aclose()
        if ganga is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ganga.stop(), timeout=5)
        await asyncio.sleep(0.1)
        consumer.cancel()
        await service.stop()
    end_to_collected = [watch.settled[i] - finish[i] for i in ending if not math.isnan(watch.settled[i])]
    uncollected = [i for i in ending if math.isnan(watch.settled[i])]
    censored = end_to_collected + [ended - finish[i] for i in uncollected]
    detected = [watch.detected[i] for i in ending if not math.isnan(watch.detected[i])]
    settled = [watch.settled[i] for i in ending if not math.isnan(watch.settled[i])]
    lag_window = [lag for at, lag in watch.status_lag if at >= start + 2.0]
    rate = (scenario.allowance - _reserve(scenario)) / 60.0
    return {
        "scenario": scenario.name,
        "model": model,
        "jobs": jobs,
        "ending": len(ending),
        "allowance_per_minute": scenario.allowance,
        "error_rate": scenario.error_rate,
        "hang_rate": scenario.hang_rate,
        "collected": collected,
        "uncollected": len(uncollected),
        "collected_twice": sum(1 for i in ending if watch.settle_count[i] > 1),
        "failed_to_collect": len(watch.collect_errors),
        "end_to_collected_p50": percentile(censored, 0.5),
        "end_to_collected_p99": percentile(censored, 0.99),
        "end_to_collected_max": max(censored, default=None),
        "censored": bool(uncollected),
        "first_detected_s": (min(detected) - start) if detected else None,
        "last_end_s": max((finish[i] for i in ending), default=start) - start,
        "all_collected_s": (max(settled) - start) if settled and not uncollected else None,
        "collect_span_s": (max(settled) - min(detected)) if settled and detected and not uncollected else None,
        "bound_s": len(ending) / rate if ending else 0.0,
        "fetch_rate_permitted": rate,
        "status_lag_p99": percentile(lag_window, 0.99),
        "status_lag_max": max(lag_window, default=None),
        "results_lag_max": max((lag for _, lag in watch.results_lag), default=None),
        "fetch_limit_max": max((limit for _, limit in watch.fetch_limit), default=None),
        "hedges": hedges,
        "fetch_calls": fetch_calls,
        "calls": calls,
        "loop_lag_p99_ms": 1000 * (percentile(loop_lags, 0.99) or 0.0),
        "poll_interval": LANE.interval,
        "fetch_latency": LANE.latency_median + LANE.output_latency,
        "series": {
            "collected": sorted(s - start for s in settled),
            "results_lag": [(at - start, lag) for at, lag in watch.results_lag],
            "status_lag": [(at - start, lag) for at, lag in watch.status_lag],
        },
        "elapsed": ended - start,
    }


def _reserve(scenario: Scenario) -> float:
    """What our lanes keep for status polls (the same rule as ``Lane._update_reserve``)."""
    active = scenario.long_running + scenario.ending
    batches = math.ceil(active / LANE.max_bulk)
    expected = batches * 60.0 / LANE.interval * SchedulerConfig().poll_reserve_margin
    return min(0.8 * scenario.allowance, max(float(LANE.concurrency), expected))


async def _tick(lags: list[float]) -> None:
    clock = time.perf_counter
    while True:
        before = clock()
        await asyncio.sleep(0.01)
        lags.append(max(0.0, clock() - before - 0.01))


# -- report ----------------------------------------------------------------------------------


def _s(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: list[dict[str, Any]]) -> str:
    by = {(r["scenario"], r["model"]): r for r in results}
    lines = [
        "| scenario | model | jobs ending | collected | end-to-collected p50 / p99 / max (s) | all collected (s) "
        "| collect span / bound (s) | status lag p99 (s) | loop lag p99 (ms) | fetch limit max | hedges | twice "
        "| failed-to-collect |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        mark = "≥" if r["censored"] else ""
        span = r["collect_span_s"]
        burst_like = r["scenario"] in ("burst", "faults")
        ratio = (
            f"{span:.1f} / {r['bound_s']:.1f} ({span / r['bound_s']:.2f}x)"
            if burst_like and span and r["bound_s"]
            else "-"
        )
        lines.append(
            f"| {r['scenario']} | {r['model']} | {r['ending']} | {r['collected']} "
            f"| {mark}{_s(r['end_to_collected_p50'])} / {mark}{_s(r['end_to_collected_p99'])} / "
            f"{mark}{_s(r['end_to_collected_max'])} | {_s(r['all_collected_s'])} | {ratio} "
            f"| {_s(r['status_lag_p99'], 2)} | {_s(r['loop_lag_p99_ms'])} | {r['fetch_limit_max'] or '-'} "
            f"| {r['hedges']} "
            f"| {r['collected_twice']} | {r['failed_to_collect']} |"
        )
    verdicts = []
    burst, calm, steady, faults = (by.get((name, "ours")) for name in ("burst", "no burst", "steady", "faults"))
    if burst and burst["collect_span_s"]:
        verdicts.append(
            f"burst: every output collected in {burst['collect_span_s']:.1f} s from the first detection, "
            f"{burst['collect_span_s'] / burst['bound_s']:.2f}x the allowance's bound of {burst['bound_s']:.1f} s "
            "(target <= 1.1x)"
        )
    if burst and calm and burst["status_lag_p99"] is not None and calm["status_lag_p99"] is not None:
        verdicts.append(
            f"status lag p99 {burst['status_lag_p99']:.2f} s with the burst, {calm['status_lag_p99']:.2f} s without "
            "(target: within 10 %, or within one call's latency of it)"
        )
    if steady and steady["end_to_collected_p99"] is not None:
        target = steady["poll_interval"] + steady["fetch_latency"]
        verdicts.append(
            f"steady: end-to-collected p99 {steady['end_to_collected_p99']:.2f} s (target <= interval + one fetch = "
            f"{target:.1f} s)"
        )
    if faults and burst and faults["all_collected_s"] and burst["all_collected_s"]:
        verdicts.append(
            f"faults: all collected at {faults['all_collected_s']:.1f} s vs {burst['all_collected_s']:.1f} s "
            f"fault-free ({faults['all_collected_s'] / burst['all_collected_s']:.2f}x, target <= 1.5x); "
            f"{faults['collected_twice']} collected twice, {faults['uncollected']} not collected, "
            f"{faults['failed_to_collect']} failed-to-collect"
        )
    return "\n".join(lines + [""] + [f"- {v}" for v in verdicts])


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name in ("burst", "steady", "faults") if any(r["scenario"] == name for r in results)]
    fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 7), squeeze=False)
    for column, name in enumerate(names):
        top, bottom = axes[0][column], axes[1][column]
        for r in (r for r in results if r["scenario"] == name):
            collected = r["series"]["collected"]
            top.step(collected, range(1, len(collected) + 1), where="post", label=r["model"])
            if r["model"] == "ours":
                xs, ys = zip(*r["series"]["results_lag"], strict=True) if r["series"]["results_lag"] else ((), ())
                bottom.plot(xs, ys, label="results lag")
                xs, ys = zip(*r["series"]["status_lag"], strict=True) if r["series"]["status_lag"] else ((), ())
                bottom.plot(xs, ys, label="status lag")
        top.set_title(f"{name}: outputs collected")
        top.set_xlabel("seconds after submission")
        top.legend()
        bottom.set_title(f"{name}: ours, lag per sample")
        bottom.set_xlabel("seconds after submission")
        bottom.set_ylabel("seconds")
        bottom.legend()
    fig.suptitle("Results lag: from a job's end to its outputs in the session (2 cores, shared)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    models = ["ours", *([] if args.ours_only else ["ganga-async", "legacy"])]
    for scenario in scenarios(args.quick):
        for model in models:
            if model != "ours" and scenario.name not in ("burst",):
                continue
            if model != "ours":
                scenario = replace(scenario, window=min(scenario.window, 120.0 if not args.quick else 60.0))
            print(f"running {scenario.name} / {model} ...", file=sys.stderr, flush=True)
            results.append(await run(scenario, model))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads, written under benchmarks/results/")
    parser.add_argument("--ours-only", action="store_true", help="skip the Ganga 8.7 and legacy models")
    parser.add_argument(
        "--reuse", type=Path, metavar="JSON", help="with --ours-only: other models' rows from an earlier run"
    )
    args = parser.parse_args(argv)
    # The Ganga 8.7 model's own loop is stopped with its finalisation tasks pending, by design.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    results = asyncio.run(main_async(args))
    if args.reuse is not None:
        earlier = [r for r in json.loads(args.reuse.read_text()) if r["model"] != "ours"]
        for row in earlier:
            row["model"] += " (earlier run)"
        results += earlier
    out = ROOT / ("benchmarks/results" if args.quick else "screenshots")
    plot(results, out / "results-lag.png")
    data = ROOT / "benchmarks" / "results" / ("results-quick.json" if args.quick else "results-full.json")
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text(json.dumps(results, indent=1))
    print(table(results))
    print(f"\nplot: {out / 'results-lag.png'}; figures: {data}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
