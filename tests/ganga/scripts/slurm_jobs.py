"""Submit Slurm jobs from a Ganga session in drive mode; cancel one behind Ganga's back; report.

Arguments: the number of jobs, and ``no-cancel`` to leave out the cancelled job.

The cluster is the one ``SLURM_CONF`` names. ``GM_SQUEUE`` is the squeue the monitor is told
to use (a wrapper that logs each call). Ganga's own per-job update of its Slurm backend is
wrapped here to count the jobs it is asked about, so the test can tell a bulk query from a
status-file read per job and poll.
"""

import os
import subprocess
import sys
import threading
import time
from collections import Counter

from common import bus_view, planned_exit_code, registry_view, stdout_of, wait_final, write_result
from GangaCore.GPI import Executable, Job, Slurm
from GangaCore.Lib.Batch.Batch import Slurm as SlurmClass

from monitor_core.backends.slurm import SlurmCommands
from monitor_core.ganga import start_monitor

count = int(sys.argv[1])
GRACE = 2.0

asked: Counter[str] = Counter()
asked_lock = threading.Lock()
ganga_update = SlurmClass.updateMonitoringInformation


def counting_update(jobs):
    with asked_lock:
        asked.update(str(job.getFQID(".")) for job in jobs)
    return ganga_update(jobs)


SlurmClass.updateMonitoringInformation = staticmethod(counting_update)

monitor = start_monitor(
    drive=True,
    socket_path=os.environ["GM_SOCKET"],
    poll_intervals={"Slurm": 1.0},
    slurm=SlurmCommands(squeue=os.environ["GM_SQUEUE"], timeout=10.0),
    slurm_vanish_grace=GRACE,
)

started = time.time()
jobs = []
for index in range(count):
    command = f"sleep {3 + index % 3}; echo job-{index}; exit {planned_exit_code(index)}"
    job = Job(name=f"slurm-{index}", application=Executable(exe="/bin/sh", args=["-c", command]), backend=Slurm())
    job.submit()
    jobs.append(job)
expected = {str(job.id): ("completed" if planned_exit_code(i) == 0 else "failed") for i, job in enumerate(jobs)}

if "no-cancel" in sys.argv[2:]:
    all_final = wait_final(jobs, limit=120)
    write_result(
        {"all_final": all_final, "expected": expected, "registry": registry_view(jobs), "bus": bus_view(monitor)}
    )
    sys.exit(0)

# A job held in the queue, then cancelled there: its script never starts, no status file at all.
held = Job(name="held", application=Executable(exe="/bin/sh", args=["-c", "true"]), backend=Slurm(extraopts="--hold"))
held.submit()
jobs.append(held)
expected[str(held.id)] = "failed"

# A job that Slurm cancels while it runs: its script never writes an exit code for Ganga.
doomed = Job(name="doomed", application=Executable(exe="/bin/sh", args=["-c", "sleep 300"]), backend=Slurm())
doomed.submit()
jobs.append(doomed)
expected[str(doomed.id)] = "failed"
deadline = time.time() + 60
while doomed.status != "running" and time.time() < deadline:
    time.sleep(0.1)
doomed_was_running = doomed.status == "running"
held_was_waiting = held.status == "submitted"
subprocess.run(["scancel", str(doomed.backend.id), str(held.backend.id)], check=True)
cancelled_at = time.time()

all_final = wait_final(jobs, limit=120)
doomed_failed_after = time.time() - cancelled_at if doomed.status == "failed" else None
deadline = time.time() + 10
while time.time() < deadline:
    bus = bus_view(monitor)
    if all(bus.get(job_id, {}).get("status") == status for job_id, status in expected.items()):
        break
    time.sleep(0.1)
write_result(
    {
        "all_final": all_final,
        "seconds": time.time() - started,
        "expected": expected,
        "registry": registry_view(jobs),
        "bus": bus_view(monitor),
        "batch_ids": {str(job.id): str(job.backend.id) for job in jobs},
        "ganga_update_asked": dict(asked),
        "held": {"id": str(held.id), "was_waiting": held_was_waiting},
        "doomed": {
            "id": str(doomed.id),
            "was_running": doomed_was_running,
            "failed_after_cancel_s": doomed_failed_after,
            "stdout": stdout_of(doomed),
        },
    }
)
