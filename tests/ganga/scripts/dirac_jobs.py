"""Submit Dirac jobs from a Ganga session to the simulated grid, kill one, and report.

Arguments: ``observe`` or ``drive``, the number of jobs, then options:
``fault=hang`` or ``fault=error`` (the service hangs, or fails every call, for a while after
the jobs are submitted), ``split`` (one split job instead of separate jobs).

``GM_DIRAC_SERVICE`` is the service's ``host:port`` (to inject its faults);
``GM_POLL`` the poll interval of both modes.
"""

import os
import sys
import time

from common import FINAL, bus_view, planned_exit_code, registry_view, wait_final, write_result
from GangaCore.GPI import ArgSplitter, Dirac, Executable, Job

from monitor_core.ganga import start_monitor
from monitor_core.sim import DiracBlockingClient

mode, count = sys.argv[1], int(sys.argv[2])
options = dict(arg.partition("=")[::2] for arg in sys.argv[3:])
POLL = float(os.environ.get("GM_POLL", "1"))
host, _, port = os.environ["GM_DIRAC_SERVICE"].rpartition(":")
service = DiracBlockingClient(host, int(port))

monitor = start_monitor(
    drive=mode == "drive",
    socket_path=os.environ["GM_SOCKET"],
    poll_intervals={"Dirac": POLL},
    call_timeout=float(options.get("timeout", "10")),
)


def command(index):
    return f"sleep {0.2 + 0.1 * (index % 4):.1f}; echo job-{index}; exit {planned_exit_code(index)}"


started = time.time()
jobs = []
expected = {}
if "split" in options:
    master = Job(
        name="split",
        application=Executable(exe="/bin/sh"),
        backend=Dirac(),
        splitter=ArgSplitter(args=[["-c", command(index)] for index in range(count)]),
    )
    master.submit()
    jobs.append(master)
    expected.update(
        {f"{master.id}.{i}": "completed" if planned_exit_code(i) == 0 else "failed" for i in range(count)}
    )
else:
    for index in range(count):
        job = Job(name=f"dirac-{index}", application=Executable(exe="/bin/sh", args=["-c", command(index)]), backend=Dirac())
        job.submit()
        jobs.append(job)
        expected[str(job.id)] = "completed" if planned_exit_code(index) == 0 else "failed"
    doomed = Job(name="doomed", application=Executable(exe="/bin/sh", args=["-c", "sleep 120"]), backend=Dirac())
    doomed.submit()
    jobs.append(doomed)
    expected[str(doomed.id)] = "killed"
submitted_at = time.time()

fault = options.get("fault")
if fault:
    changes = {"hang_rate": 1.0, "hang_seconds": 600.0} if fault == "hang" else {"error_rate": 1.0}
    service.call("configure", changes)

if "split" not in options:
    deadline = time.time() + 60
    while doomed.status != "running" and time.time() < deadline:
        time.sleep(0.1)
    if fault:
        time.sleep(6)
        service.call("configure", {"hang_rate": 0.0, "error_rate": 0.0})
    doomed_was_running = doomed.status == "running"
    doomed.kill()
else:
    doomed_was_running = None

all_final = wait_final(jobs[:-1] if "split" not in options else jobs, limit=150)
if "split" in options:
    all_final = all_final and all(sub.status in FINAL for sub in jobs[0].subjobs)
deadline = time.time() + 15
while time.time() < deadline:
    bus = bus_view(monitor)
    if all(bus.get(job_id, {}).get("status") == status for job_id, status in expected.items()):
        break
    time.sleep(0.1)
times = {}
for job in jobs:
    for one in [job, *list(job.subjobs)]:
        if not len(one.subjobs):
            times[one.fqid] = {
                "dirac_id": one.backend.id,
                "submitted": str(one.time.timestamps.get("submitted", "")),
                "final": str(one.time.timestamps.get(one.status, "")),
            }
write_result(
    {
        "all_final": all_final,
        "seconds": time.time() - started,
        "submit_seconds": submitted_at - started,
        "expected": expected,
        "registry": registry_view(jobs),
        "bus": bus_view(monitor),
        "times": times,
        "doomed_was_running": doomed_was_running,
        "service": service.call("stats")["Value"],
    }
)
