"""One model, one workload, in a process of its own: ``python -m benchmarks.concurrency.child SPEC RESULT``.

A fresh process per run keeps the numbers apart: CPU seconds and peak RSS are this
process's (and its subprocess workers'), and threads a hung backend leaves behind in one
model cannot disturb the next. The simulated services run in processes of their own,
started by the orchestrator, which also submitted the jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import logging
import math
import os
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any, Protocol

from monitor_core import EventBus

from .ganga_async import GangaAsyncModel
from .lanes import Lifetimes, Submitted
from .legacy import LegacyModel
from .ours import KINDS, SchedulerModel
from .recorder import Recorder, ResourceMeter, percentile


class Model(Protocol):
    track_ops: bool

    def loop(self) -> asyncio.AbstractEventLoop: ...
    async def start(self) -> None: ...
    async def track(self) -> None: ...
    async def stop(self) -> None: ...


def build_model(
    name: str, lanes: list[Submitted], bus: EventBus, recorder: Recorder, workdir: Path, spec: dict[str, Any]
) -> Model:
    """The model called ``name``, polling each lane at ``spec["intervals"]``."""
    intervals = {str(k): float(v) for k, v in spec.get("intervals", {}).items()}
    status_dir = Path(spec.get("status_dir", workdir / "status"))
    if name == "legacy":
        # The old loop sweeps a backend again at its first step after the last sweep: its step
        # is its interval (see legacy.py). As shipped, that step is 2 s.
        step = 2.0 if spec.get("shipped") or not intervals else max(intervals.values())
        return LegacyModel(lanes, bus, recorder, workdir, status_dir=status_dir, base_poll_rate=step)
    if name == "ganga-async":
        return GangaAsyncModel(
            lanes,
            bus,
            recorder,
            workdir,
            intervals=intervals,
            status_dir=status_dir,
            together=spec.get("activation") == "together",
        )
    if name in KINDS:
        return SchedulerModel(name, lanes, bus, workdir, intervals=intervals)
    raise ValueError(f"unknown model {name!r}")


def finish_times(lanes: list[Submitted], lifetimes: Lifetimes) -> tuple[array[float], array[int]]:
    """Wall time each job ends at its service, and its lane index."""
    finish: array[float] = array("d")
    lane_of: array[int] = array("B")
    for lane_index, submitted in enumerate(lanes):
        durations = lifetimes.durations(submitted.lane.name, submitted.count)
        chunks = [*submitted.submitted_at, (submitted.count, math.inf)]
        for (first, at), (following, _) in itertools.pairwise(chunks):
            for k in range(first, following):
                finish.append(at + durations[k])
                lane_of.append(lane_index)
    return finish, lane_of


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    lanes = [Submitted.from_dict(d) for d in spec["lanes"]]
    lifetimes = Lifetimes(**spec["lifetimes"])
    finish, lane_of = finish_times(lanes, lifetimes)
    recorder = Recorder(finish, lane_of, len(lanes))
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    model = build_model(spec["model"], lanes, bus, recorder, workdir, spec)
    start_began = time.time()
    await model.start()
    start_s = time.time() - start_began
    gc.collect()
    meter = ResourceMeter()
    meter.start()

    # The sweep clock starts before the jobs are handed over: adopting them is part of the sweep.
    started = time.time()
    recorder.sweep_start = started
    # Subscribed before the jobs are handed over, since the scheduler starts polling the first
    # slices while it still adopts the rest: a poll queued then must reach the recorder. The
    # events wait in the subscription's buffer until the adoption is over, so reading them
    # costs the monitoring loop nothing meanwhile (their times are the bus's, not the reader's).
    subscription = Recorder.subscribe(bus)
    await model.track()
    adopted = time.time()
    consumer = asyncio.create_task(recorder.consume(subscription, track_ops=model.track_ops))
    ticker = asyncio.run_coroutine_threadsafe(recorder.tick(), model.loop())
    faults = spec.get("fault")

    window = float(spec["window"])
    if spec.get("until_swept"):
        # The Ganga models mark the sweep's end from their own threads: poll for it.
        while recorder.sweep_end is None and time.time() - started < window:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    else:
        # Every model stops the same time after the jobs were submitted.
        await asyncio.sleep(max(0.0, float(spec["submitted_by"]) + window - time.time()))
    ended = time.time()
    cpu = meter.stop()
    ticker.cancel()

    loop_lags = list(recorder.loop_lags)
    jobs = len(finish)
    warmup = float(spec.get("warmup", 0.0))
    steady_lags = [lag for lag, at in zip(loop_lags, recorder.loop_lag_times, strict=False) if at >= started + warmup]
    names = [s.lane.name for s in lanes]
    tail = float(spec.get("tail", 0.0))
    detection = recorder.detection(ended - tail, ended, names)
    bound = max(s.lane.sweep_bound(s.count) for s in lanes)
    result = {
        "model": spec["model"],
        "workload": spec["workload"],
        "group": spec.get("group"),
        "jobs": jobs,
        "lanes": names,
        "intervals": spec.get("intervals"),
        "shipped": spec.get("shipped", False),
        "activation": spec.get("activation"),
        "window": window,
        "measured_s": ended - started,
        "warmup": warmup,
        "tail": tail,
        "start_s": start_s,
        "adopt_s": adopted - started,
        "sweep_s": None if recorder.sweep_end is None else recorder.sweep_end - started,
        "swept": recorder.confirmed_count,
        "swept_by_lane": dict(zip(names, recorder.lane_confirmed, strict=True)),
        "sweep_by_lane_s": {
            name: None if end is None else end - started
            for name, end in zip(names, recorder.lane_sweep_end, strict=True)
        },
        "sweep_bound_by_lane_s": {s.lane.name: s.lane.sweep_bound(s.count) for s in lanes},
        "sweep_bound_s": bound,
        "call_latency_s": max(s.lane.mean_latency(min(s.count, s.lane.max_bulk)) for s in lanes),
        "poll_interval_s": max((spec.get("intervals") or {"": 0.0}).values()),
        "detection": detection,
        "loop_lag_p99_ms": None if not loop_lags else 1000 * (percentile(loop_lags, 0.99) or 0.0),
        "loop_lag_max_ms": None if not loop_lags else 1000 * max(loop_lags),
        "loop_lag_steady_p99_ms": None if not steady_lags else 1000 * (percentile(steady_lags, 0.99) or 0.0),
        "loop_lag_steady_max_ms": None if not steady_lags else 1000 * max(steady_lags),
        "cpu_s": cpu,
        "baseline_rss": meter.baseline_rss,
        "peak_rss": meter.peak_rss,
        "bytes_per_job": (meter.peak_rss - meter.baseline_rss) / jobs if jobs else None,
        "fault": faults,
    }
    with contextlib.suppress(Exception):
        await asyncio.wait_for(model.stop(), timeout=5)
    consumer.cancel()
    return result


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.ERROR)
    # The Ganga model's loop is abandoned with its tasks pending, on purpose; do not report them.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    spec = json.loads(Path(argv[0]).read_text())
    result = asyncio.run(run(spec))
    Path(argv[1]).write_text(json.dumps(result))
    sys.stdout.flush()
    sys.stderr.flush()
    # Threads stuck in a hung backend call cannot be joined; end without waiting for them.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
