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
from monitor_core.sim import DiracAsyncClient

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


def build_model(name: str, lanes: list[Submitted], bus: EventBus, recorder: Recorder, workdir: Path) -> Model:
    """The model called ``name``."""
    if name == "legacy":
        return LegacyModel(lanes, bus, recorder, workdir)
    if name == "ganga-async":
        return GangaAsyncModel(lanes, bus, recorder, workdir)
    if name in KINDS:
        return SchedulerModel(name, lanes, bus, workdir)
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


async def inject_fault(port: int, settings: dict[str, Any], delay: float) -> None:
    """Change a service's faults at run time, after ``delay`` seconds."""
    await asyncio.sleep(delay)
    await DiracAsyncClient(port=port).call("configure", settings)


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    lanes = [Submitted.from_dict(d) for d in spec["lanes"]]
    lifetimes = Lifetimes(**spec["lifetimes"])
    finish, lane_of = finish_times(lanes, lifetimes)
    recorder = Recorder(finish, lane_of, len(lanes))
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    model = build_model(spec["model"], lanes, bus, recorder, workdir)
    await model.start()
    gc.collect()
    meter = ResourceMeter()
    meter.start()

    adopt_start = time.time()
    await model.track()
    adopted = time.time()
    # Subscribed after the jobs are tracked, so the recorder's copy of them is one snapshot
    # taken before the clock starts, not a backlog of additions read during the sweep.
    consumer = asyncio.create_task(recorder.consume(Recorder.subscribe(bus), track_ops=model.track_ops))
    started = time.time()
    recorder.sweep_start = started
    ticker = asyncio.run_coroutine_threadsafe(recorder.tick(), model.loop())
    faults = spec.get("fault")
    fault_task = None
    if faults:
        port = next(s.port for s in lanes if s.lane.name == faults["lane"])
        fault_task = asyncio.create_task(inject_fault(port, faults["settings"], faults["at"]))

    window = float(spec["window"])
    if spec.get("until_swept"):
        # The Ganga models mark the sweep's end from their own threads: poll for it.
        while recorder.sweep_end is None and time.time() - started < window:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    else:
        await asyncio.sleep(window)
    ended = time.time()
    cpu = meter.stop()
    ticker.cancel()

    loop_lags = list(recorder.loop_lags)
    jobs = len(finish)
    warmup = float(spec.get("warmup", 0.0))
    steady_lags = [lag for lag, at in zip(loop_lags, recorder.loop_lag_times, strict=False) if at >= started + warmup]
    names = [s.lane.name for s in lanes]
    tail = float(spec.get("tail", 0.0))
    detection = recorder.detection(started + warmup, ended - tail, ended, names)
    bound = max(s.lane.sweep_bound(s.count) for s in lanes)
    result = {
        "model": spec["model"],
        "workload": spec["workload"],
        "jobs": jobs,
        "lanes": names,
        "window": window,
        "warmup": warmup,
        "tail": tail,
        "adopt_s": adopted - adopt_start,
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
        "poll_interval_s": max(s.lane.interval for s in lanes),
        "detection": detection,
        "loop_lag_p99_ms": None if not loop_lags else 1000 * (percentile(loop_lags, 0.99) or 0.0),
        "loop_lag_max_ms": None if not loop_lags else 1000 * max(loop_lags),
        "loop_lag_steady_p99_ms": None if not steady_lags else 1000 * (percentile(steady_lags, 0.99) or 0.0),
        "cpu_s": cpu,
        "baseline_rss": meter.baseline_rss,
        "peak_rss": meter.peak_rss,
        "bytes_per_job": (meter.peak_rss - meter.baseline_rss) / jobs if jobs else None,
        "fault": faults,
    }
    if fault_task is not None:
        fault_task.cancel()
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
