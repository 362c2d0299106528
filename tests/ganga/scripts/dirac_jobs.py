"""Submit Dirac jobs from a Ganga session to the simulated grid, kill one, and report.

Arguments: ``observe`` or ``drive``, the number of separate jobs, then options:
``split=N`` (also a split job of N subjobs), ``nokill`` (no job to kill),
``fault=hang,error`` (the service hangs, then fails every call, for ``fault_for``
seconds each once the jobs are submitted, and until a call has met the fault),
``timeout=S`` (drive mode's call timeout).

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


def outcome(index):
    return "completed" if planned_exit_code(index) == 0 else "failed"


started = time.time()
jobs = []
expected = {}
for index in range(count):
    application = Executable(exe="/bin/sh", args=["-c", command(index)])
    job = Job(name=f"dirac-{index}", application=application, backend=Dirac())
    job.submit()
    jobs.append(job)
    expected[str(job.id)] = outcome(index)
if "split" in options:
    subjobs = int(options["split"])
    master = Job(
        name="split",
        application=Executable(exe="/bin/sh"),
        backend=Dirac(),
        splitter=ArgSplitter(args=[["-c", command(index)] for index in range(subjobs)]),
    )
    master.submit()
    jobs.append(master)
    expected.update({f"{master.id}.{index}": outcome(index) for index in range(subjobs)})
doomed = None
if "nokill" not in options:
    doomed = Job(name="doomed", application=Executable(exe="/bin/sh", args=["-c", "sleep 120"]), backend=Dirac())
    doomed.submit()
    expected[str(doomed.id)] = "killed"
submitted_at = time.time()

for fault in filter(None, options.get("fault", "").split(",")):
    changes = {"hang_rate": 1.0, "hang_seconds": float(options.get("hang_seconds", "8"))}
    seen = service.call("stats")["Value"]["faults"].get(fault, 0)
    service.call("configure", changes if fault == "hang" else {"error_rate": 1.0})
    # The window lasts fault_for seconds, and until a call has met the fault: a breaker that
    # opened in the window before may keep the lane away from the service for a while.
    window_ends, give_up = time.time() + float(options.get("fault_for", "6")), time.time() + 90
    while time.time() < window_ends or (
        service.call("stats")["Value"]["faults"].get(fault, 0) == seen and time.time() < give_up
    ):
        time.sleep(0.2)
    service.call("configure", {"hang_rate": 0.0, "error_rate": 0.0})

doomed_was_running = None
if doomed is not None:
    deadline = time.time() + 60
    while doomed.status != "running" and time.time() < deadline:
        time.sleep(0.1)
    doomed_was_running = doomed.status == "running"
    doomed.kill()

all_final = wait_final(jobs, limit=float(options.get("limit", "150")))
all_final = all_final and all(sub.status in FINAL for job in jobs for sub in job.subjobs)
deadline = time.time() + 15
while time.time() < deadline:
    bus = bus_view(monitor)
    if all(bus.get(job_id, {}).get("status") == status for job_id, status in expected.items()):
        break
    time.sleep(0.1)
dirac_ids = {}
for job in [*jobs, *([doomed] if doomed is not None else [])]:
    for one in [job, *list(job.subjobs)]:
        if not len(one.subjobs):
            dirac_ids[one.fqid] = one.backend.id
write_result(
    {
        "all_final": all_final,
        "seconds": time.time() - started,
        "submit_seconds": submitted_at - started,
        "expected": expected,
        "registry": registry_view([*jobs, *([doomed] if doomed is not None else [])]),
        "bus": bus_view(monitor),
        "dirac_ids": dirac_ids,
        "doomed_was_running": doomed_was_running,
        "service": service.call("stats")["Value"],
    }
)
