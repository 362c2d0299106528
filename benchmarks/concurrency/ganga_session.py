"""Run inside a headless Ganga 8.7.12 session (``ganga ... ganga_session.py MODE COUNT INTERVAL OUT``).

Submits COUNT real ``Local`` jobs (``/bin/sh`` sleeping, then writing the time it ends and
exiting; every tenth exits 1), monitored either by Ganga's own ``AsyncMonitoringService``
(MODE ``ganga``, its ``[PollThread]Local`` rate set on the command line) or by our scheduler
in drive mode (MODE ``drive``, polling Local every INTERVAL seconds). A hook on
``Job.updateStatus`` notes when the registry says ``completed`` or ``failed``: for Local,
outputs are in the job's output directory by then, so that moment is both detection and
collection. Writes per-job delays, CPU seconds of this process and the monitoring loop's lag.
"""

# Ganga runs this file with its GPI names (Job, Executable, Local) as builtins.
# ruff: noqa: F821

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time

import psutil
from GangaCore.GPIDev.Lib.Job.Job import Job as RawJob

mode, count, interval, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
final_at: dict[str, float] = {}
lock = threading.Lock()
original = RawJob.updateStatus


def timed(job, new, *args, **kwargs):  # type: ignore[no-untyped-def]
    result = original(job, new, *args, **kwargs)
    if job.status in ("completed", "failed"):
        with lock:
            final_at.setdefault(job.getFQID("."), time.time())
    return result


RawJob.updateStatus = timed
lags: list[float] = []


async def tick() -> None:
    while True:
        before = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(max(0.0, time.perf_counter() - before - 0.01))


if mode == "drive":
    from monitor_core.ganga import start_monitor

    monitor = start_monitor(drive=True, serve=False, poll_intervals={"Local": interval})
    # The monitor's own loop, where its scheduler runs (measured, not driven, from here).
    loop = getattr(monitor, "_loop", None)
else:
    from GangaCore.Core import monitoring_component

    loop = monitoring_component.loop

process = psutil.Process()
times = process.cpu_times()
cpu_start = times.user + times.system
if isinstance(loop, asyncio.AbstractEventLoop):
    asyncio.run_coroutine_threadsafe(tick(), loop)

jobs = []
submit_started = time.time()
for index in range(count):
    # Spread the ends over the run, after every job is submitted.
    duration = 2.0 + 0.05 * count + 10.0 * ((index * 7) % count) / count
    code = 1 if index % 10 == 0 else 0
    command = f"sleep {duration:.2f}; date +%s.%N; exit {code}"
    job = Job(application=Executable(exe="/bin/sh", args=["-c", command]), backend=Local())  # type: ignore[name-defined]
    job.submit()
    jobs.append(job)
submit_seconds = time.time() - submit_started
deadline = time.time() + 120 + 4 * interval
while any(job.status not in ("completed", "failed", "killed") for job in jobs) and time.time() < deadline:
    time.sleep(0.2)
ended = time.time()
times = process.cpu_times()
cpu = times.user + times.system - cpu_start
delays, missing = [], []
for job in jobs:
    try:
        with open(os.path.join(job.outputdir, "stdout")) as stream:
            exited = float(stream.read().split()[-1])
    except (OSError, IndexError, ValueError):
        missing.append(job.fqid)
        continue
    if job.fqid in final_at:
        delays.append(final_at[job.fqid] - exited)
    else:
        delays.append(ended - exited)
        missing.append(job.fqid)
with open(out, "w") as stream:
    json.dump(
        {
            "delays": delays,
            "missing": missing,
            "submit_seconds": submit_seconds,
            "cpu_s": cpu,
            "loop_lags": lags,
            "statuses": [job.status for job in jobs],
        },
        stream,
    )
