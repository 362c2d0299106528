"""Run inside a headless Ganga 8.7.12 session (``ganga ... dirac_session.py MODE COUNT INTERVAL OUT``).

Submits COUNT real ``Dirac`` jobs through Ganga's own Dirac backend to the simulated DIRAC
grid (the stand-in DIRAC environment, ``monitor_core.sim.dirac_env``), where each runs as a
real process (``/bin/sh`` sleeping; every tenth exits 1). They are monitored either by Ganga's
own ``AsyncMonitoringService`` with ``DiracBase.updateMonitoringInformation`` (MODE ``ganga``,
``[PollThread]Dirac`` set on the command line) or by our scheduler in drive mode (MODE
``drive``, polling Dirac every INTERVAL seconds). A hook on ``Job.updateStatus`` notes when
the registry first says the job finished (``completing``, ``completed`` or ``failed``) and when
it says ``completed`` or ``failed`` (outputs downloaded by then, except a failed job's
sandbox, which Ganga downloads after marking it failed). The grid says when each job became
final there (``jobTimes``).
"""

# Ganga runs this file with its GPI names (Job, Executable, Dirac) as builtins.
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

from monitor_core.sim import DiracBlockingClient

mode, count, interval, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
finished_at: dict[str, float] = {}
final_at: dict[str, float] = {}
lock = threading.Lock()
original = RawJob.updateStatus


def timed(job, new, *args, **kwargs):  # type: ignore[no-untyped-def]
    result = original(job, new, *args, **kwargs)
    now = time.time()
    with lock:
        if job.status in ("completing", "completed", "failed"):
            finished_at.setdefault(job.getFQID("."), now)
        if job.status in ("completed", "failed"):
            final_at.setdefault(job.getFQID("."), now)
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

    monitor = start_monitor(drive=True, serve=False, poll_intervals={"Dirac": interval})
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
for index in range(count):
    duration = 3.0 + 10.0 * ((index * 7) % count) / count
    code = 1 if index % 10 == 0 else 0
    command = f"sleep {duration:.2f}; echo job-{index}; exit {code}"
    job = Job(application=Executable(exe="/bin/sh", args=["-c", command]), backend=Dirac())  # type: ignore[name-defined]
    job.submit()
    jobs.append(job)
deadline = time.time() + 150 + 6 * interval
while any(job.status not in ("completed", "failed", "killed") for job in jobs) and time.time() < deadline:
    time.sleep(0.2)
ended = time.time()
times = process.cpu_times()
cpu = times.user + times.system - cpu_start
host, _, port = os.environ["GM_DIRAC_SERVICE"].rpartition(":")
grid_times = DiracBlockingClient(host, int(port)).call("jobTimes")["Value"]
detection, results, missing = [], [], []
for job in jobs:
    grid = grid_times.get(str(job.backend.id), {})
    done = grid.get("final")
    if done is None:
        missing.append(job.fqid)
        continue
    detection.append(finished_at.get(job.fqid, ended) - float(done))
    results.append(final_at.get(job.fqid, ended) - float(done))
    if job.fqid not in final_at:
        missing.append(job.fqid)
with open(out, "w") as stream:
    json.dump(
        {
            "delays": detection,
            "results": results,
            "missing": missing,
            "cpu_s": cpu,
            "loop_lags": lags,
            "statuses": [job.status for job in jobs],
        },
        stream,
    )
