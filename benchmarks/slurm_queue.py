"""1,000 queued jobs on a real one-node Slurm cluster, next to the simulated backends.

``python -m benchmarks.slurm_queue [--jobs 1000] [--interval 5] [--window 40]``

Starts its own cluster with ``scripts/slurm-local`` (in ``/tmp/gm-slurm-bench``, stopped
afterwards), submits the jobs through the monitor and watches them for a fixed window with
a constant poll interval, then does the same on the simulated DIRAC grid and on local
processes. Per backend it prints: status calls per sweep (one per batch of ``max_batch``
ids), sweep time (first call of a sweep started to last call answered) and detection lag
(a job's true end to the monitor's first "finished" change). Slurm jobs and local jobs
print their end time as their last line; a simulated DIRAC job ends at submission plus
its duration (the service is set up without queueing).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from monitor_core import (
    AdaptiveInterval,
    Event,
    EventBus,
    JobChanged,
    JobSpec,
    JobStatus,
    OpFinished,
    OpKind,
    OpQueued,
    OpStarted,
    OutputSink,
    Scheduler,
    SchedulerConfig,
)
from monitor_core.backends import Backend
from monitor_core.backends.dirac_sim import DEFAULT_CAPABILITIES as DIRAC_CAPABILITIES
from monitor_core.backends.dirac_sim import DiracSimBackend
from monitor_core.backends.local import DEFAULT_CAPABILITIES as LOCAL_CAPABILITIES
from monitor_core.backends.local import LocalBackend
from monitor_core.backends.slurm import DEFAULT_CAPABILITIES as SLURM_CAPABILITIES
from monitor_core.backends.slurm import SlurmBackend, SlurmCommands
from monitor_core.sim import DiracSimConfig, DiracSimProcess

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "slurm-local"
CLUSTER_DIR = Path("/tmp/gm-slurm-bench")
FINISHED = frozenset({JobStatus.COMPLETING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.KILLED})


@dataclass(frozen=True)
class Row:
    backend: str
    jobs: int
    max_batch: int
    calls_per_sweep: list[int]
    sweep_s: list[float]
    lags: list[float]
    submit_s: float


def _command(seconds: float) -> tuple[str, ...]:
    return ("/bin/sh", "-c", f"sleep {seconds:.2f}; date +%s.%N")


def _specs(backend: str, count: int, seed: int) -> list[JobSpec]:
    rng = random.Random(seed)
    return [
        JobSpec(f"{backend}-{i}", backend, command=_command(d), duration=d)
        for i, d in enumerate(round(rng.uniform(1.0, 4.0), 2) for _ in range(count))
    ]


def _sweeps(events: Sequence[Event], interval: float) -> tuple[list[int], list[float]]:
    """Group poll calls into sweeps: a sweep starts when a call starts half an interval after the last sweep began."""
    polls = {e.op.op_id for e in events if isinstance(e, OpQueued) and e.op.kind == OpKind.POLL}
    started: dict[int, float] = {}
    spans: list[tuple[float, float]] = []
    for event in events:
        if isinstance(event, OpStarted) and event.op_id in polls:
            started.setdefault(event.op_id, event.at)
        elif isinstance(event, OpFinished) and event.op_id in started and event.retry_in is None:
            spans.append((started[event.op_id], event.at))
    spans.sort()
    groups: list[list[tuple[float, float]]] = []
    for span in spans:
        if not groups or span[0] - groups[-1][0][0] > interval / 2:
            groups.append([])
        groups[-1].append(span)
    return [len(g) for g in groups], [max(end for _, end in g) - g[0][0] for g in groups]


async def _measure(
    backend: Backend,
    specs: list[JobSpec],
    *,
    interval: float,
    window: float,
    workdir: Path,
    true_end: Callable[[str, JobSpec, float], float | None],
) -> Row:
    bus = EventBus()
    subscription = bus.subscribe(name="bench")
    events: list[Event] = []
    outputs = workdir / "outputs"
    scheduler = Scheduler(
        [backend],
        bus=bus,
        outputs=OutputSink(outputs),
        config=SchedulerConfig(drain_timeout=2.0),
        policy=AdaptiveInterval(fast=1.0, slow=1.0),
        session=f"bench-{backend.name}",
    )

    async def pump() -> None:
        async for event in subscription:
            events.append(event)

    async with scheduler:
        reader = asyncio.create_task(pump())
        submitted_at = time.time()
        jobs = await scheduler.submit(specs)
        submit_s = time.time() - submitted_at
        await asyncio.sleep(window)
        subscription.close()
        reader.cancel()
    by_id = {job.job_id: spec for job, spec in zip(jobs, specs, strict=True)}
    detected: dict[str, float] = {}
    for event in events:
        if isinstance(event, JobChanged) and event.new in FINISHED:
            detected.setdefault(event.job_id, event.at)
    lags = []
    for job_id, at in detected.items():
        spec = by_id[job_id]
        end = true_end(job_id, spec, submitted_at)
        if end is not None:
            lags.append(at - end)
    calls, sweep_s = _sweeps(events, interval)
    return Row(backend.name, len(specs), backend.capabilities.max_batch, calls, sweep_s, lags, submit_s)


def _end_from_stdout(outputs: Path) -> Callable[[str, JobSpec, float], float | None]:
    def end(job_id: str, spec: JobSpec, submitted_at: float) -> float | None:
        try:
            return float((outputs / job_id / "stdout").read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            return None

    return end


def _cluster(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SLURM_LOCAL_DIR": str(CLUSTER_DIR)}
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, check=False)


async def run(args: argparse.Namespace) -> list[Row]:
    rows = []
    base = Path(tempfile.mkdtemp(prefix="gm-bench-slurm-"))
    caps = {"interval": args.interval, "window": args.window}
    try:
        print("starting the one-node Slurm cluster ...", file=sys.stderr, flush=True)
        up = _cluster("up", "--fresh")
        if up.returncode != 0:
            raise SystemExit(f"scripts/slurm-local up failed: {up.stderr[-800:]}")
        slurm = SlurmBackend(
            base / "slurm" / "work",
            commands=SlurmCommands(slurm_conf=CLUSTER_DIR / "etc" / "slurm.conf"),
            capabilities=replace(SLURM_CAPABILITIES, poll_interval=args.interval),
        )
        print(f"slurm: {args.jobs} jobs ...", file=sys.stderr, flush=True)
        rows.append(
            await _measure(
                slurm,
                _specs("slurm", args.jobs, 1),
                workdir=base / "slurm",
                true_end=_end_from_stdout(base / "slurm" / "outputs"),
                **caps,
            )
        )
    finally:
        _cluster("down")
        shutil.rmtree(CLUSTER_DIR, ignore_errors=True)
    config = DiracSimConfig(latency_median=0.3, queue_time=0.0, completing_time=0.0, stall_rate=0.0)
    async with DiracSimProcess(config) as service:
        dirac = DiracSimBackend.isolated(
            service.port, capabilities=replace(DIRAC_CAPABILITIES, poll_interval=args.interval)
        )
        print(f"dirac-sim: {args.jobs} jobs ...", file=sys.stderr, flush=True)
        specs = _specs("dirac-sim", args.jobs, 1)
        # Without a queue on the simulated grid most jobs would end inside the window; stretch
        # them so the queue stays about as full as Slurm's, where 16 run at a time.
        specs = [replace(s, duration=s.duration if i < 200 else 3600.0) for i, s in enumerate(specs)]
        rows.append(
            await _measure(
                dirac,
                specs,
                workdir=base / "dirac",
                true_end=lambda job_id, spec, submitted_at: submitted_at + spec.duration,
                **caps,
            )
        )
    local = LocalBackend(
        base / "local" / "jobs", max_running=16, capabilities=replace(LOCAL_CAPABILITIES, poll_interval=args.interval)
    )
    print(f"local: {args.jobs} jobs ...", file=sys.stderr, flush=True)
    rows.append(
        await _measure(
            local,
            _specs("local", args.jobs, 1),
            workdir=base / "local",
            true_end=_end_from_stdout(base / "local" / "outputs"),
            **caps,
        )
    )
    shutil.rmtree(base, ignore_errors=True)
    return rows


def _pct(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)] if ordered else float("nan")


def table(rows: Sequence[Row], interval: float) -> str:
    lines = [
        "| backend | jobs queued | max batch | status calls per sweep | sweep s (median / max) "
        "| detection lag s (p50 / p99 / max) | jobs ended | submit s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        calls = statistics.median(r.calls_per_sweep) if r.calls_per_sweep else float("nan")
        sweep = f"{statistics.median(r.sweep_s):.3f} / {max(r.sweep_s):.3f}" if r.sweep_s else "-"
        lag = f"{_pct(r.lags, 0.5):.2f} / {_pct(r.lags, 0.99):.2f} / {max(r.lags, default=float('nan')):.2f}"
        lines.append(
            f"| {r.backend} | {r.jobs:,} | {r.max_batch} | {calls:g} | {sweep} | {lag} | {len(r.lags)} "
            f"| {r.submit_s:.1f} |"
        )
    lines.append(f"\npoll interval {interval:g}s for every backend (constant, no adaptive policy)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.slurm_queue", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0, help="poll interval of every backend, seconds")
    parser.add_argument("--window", type=float, default=40.0, help="seconds of monitoring after submission")
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args))
    print(table(rows, args.interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
