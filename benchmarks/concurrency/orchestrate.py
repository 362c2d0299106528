"""Runs a workload for each model: fresh services, submitted jobs, one monitor process per model."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from monitor_core.sim import DiracAsyncClient, DiracSimProcess

from . import status_files
from .lanes import LONG_RUNNING, Submitted
from .workloads import OURS, Workload

SUBMIT_CHUNK = 5000


async def submit_lane(service: DiracSimProcess, submitted: Submitted, durations: list[float]) -> None:
    """Submit a lane's jobs in chunks, noting when each chunk was accepted."""
    client = DiracAsyncClient(port=service.port)
    first_id = None
    for start in range(0, len(durations), SUBMIT_CHUNK):
        chunk = durations[start : start + SUBMIT_CHUNK]
        specs = [
            {
                "name": f"{submitted.lane.name}.{start + k}",
                "duration": d,
                "outcome": "failed" if (start + k) % 10 == 0 else "done",
            }
            for k, d in enumerate(chunk)
        ]
        answer = await client.submitJobs(specs)
        accepted = time.time()
        ids = answer["Value"]
        if first_id is None:
            first_id = ids[0]
        if ids != list(range(first_id + start, first_id + start + len(chunk))):
            raise RuntimeError(f"{submitted.lane.name}: the service handed out ids out of order")
        submitted.submitted_at.append((start, accepted))
    submitted.first_id = first_id or 0


async def run_one(workload: Workload, model: str, seed: int = 1) -> dict[str, Any]:
    """Start the workload's services, submit its jobs, and run ``model`` against them in a child process.

    Lanes Ganga watches through a status file per job get those files too (see
    :mod:`.status_files`); a fault is switched on once the jobs are submitted, before any
    model starts, so every model meets it from its first call.
    """
    services = [DiracSimProcess(lane.sim_config(seed + i)) for i, lane in enumerate(workload.lanes)]
    for service in services:
        await service.start()
    scratch = Path(tempfile.mkdtemp(prefix="bench-run-"))
    writer: asyncio.Task[None] | None = None
    try:
        lanes = []
        ends: list[tuple[float, str, int, int]] = []
        file_lanes = [] if model in OURS else [lane for lane in workload.lanes if not lane.ganga_bulk]
        for lane, count in zip(workload.lanes, workload.per_lane(), strict=True):
            if lane in file_lanes:
                await asyncio.to_thread(status_files.create, scratch / "status", lane.name, count)
        for service, lane, count in zip(services, workload.lanes, workload.per_lane(), strict=True):
            submitted = Submitted(lane=lane, port=service.port, first_id=0, count=count)
            durations = workload.lifetimes.durations(lane.name, count)
            await submit_lane(service, submitted, durations)
            lanes.append(submitted)
            if lane in file_lanes:
                chunks = [*submitted.submitted_at, (count, 0.0)]
                for (first, at), (following, _) in itertools.pairwise(chunks):
                    for k in range(first, following):
                        if durations[k] < LONG_RUNNING:
                            ends.append((at + durations[k], lane.name, k, 1 if k % 10 == 0 else 0))
        if ends:
            writer = asyncio.create_task(status_files.write_exits(scratch / "status", ends))
        if workload.fault:
            port = next(s.port for s in lanes if s.lane.name == workload.fault["lane"])
            await DiracAsyncClient(port=port).call("configure", workload.fault["settings"])
        submitted_by = max(at for s in lanes for _, at in s.submitted_at)
        spec = {
            "model": model,
            "workload": workload.name,
            "group": workload.group,
            "lanes": [s.to_dict() for s in lanes],
            "lifetimes": {
                "finishing_share": workload.lifetimes.finishing_share,
                "first_end": workload.lifetimes.first_end,
                "last_end": workload.lifetimes.last_end,
                "seed": workload.lifetimes.seed,
            },
            "window": workload.window,
            "submitted_by": submitted_by,
            "warmup": workload.warmup,
            "tail": workload.tail,
            "until_swept": workload.until_swept,
            "fault": workload.fault,
            "intervals": workload.intervals(model),
            "shipped": workload.shipped,
            "activation": workload.activation,
            "status_dir": str(scratch / "status"),
        }
        spec_path, result_path = scratch / "spec.json", scratch / "result.json"
        spec_path.write_text(json.dumps(spec))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.concurrency.child", str(spec_path), str(result_path)
        )
        try:
            code = await asyncio.wait_for(process.wait(), timeout=workload.window + 180)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RuntimeError(f"{model} on {workload.name} did not finish") from None
        if code != 0 or not result_path.exists():
            raise RuntimeError(f"{model} on {workload.name} failed with exit status {code}")
        result: dict[str, Any] = json.loads(result_path.read_text())
        return result
    finally:
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        for service in services:
            await service.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def run_subprocess_check() -> None:
    """Fail early with a clear message when the package cannot be imported by a child."""
    subprocess.run([sys.executable, "-c", "import benchmarks.concurrency.child"], check=True)
