"""Submit N Local jobs of varied length and exit code, wait for them, report what Ganga and the bus say.

Arguments: how the monitor starts (``observe``, ``drive`` or ``startup`` = already started by
``~/.ganga.py``), the number of jobs, and ``split`` to add a split job whose flaky subjob
needs Ganga's auto-resubmit.
"""

import os
import sys
import time

from common import bus_view, local_job, planned_exit_code, registry_view, wait_final, wait_for_viewers, write_result
from GangaCore.GPI import ArgSplitter, Executable, Job, Local

from monitor_core.ganga import current_monitor, start_monitor

how, count = sys.argv[1], int(sys.argv[2])
with_split = "split" in sys.argv[3:]
if how == "startup":
    monitor = current_monitor()
    assert monitor is not None, "~/.ganga.py did not start the monitor"
else:
    monitor = start_monitor(drive=how == "drive", socket_path=os.environ["GM_SOCKET"])
wait_for_viewers(monitor)

started = time.time()
jobs = []
for index in range(count):
    job = local_job(index)
    job.submit()
    jobs.append(job)
expected = {str(job.id): ("completed" if planned_exit_code(i) == 0 else "failed") for i, job in enumerate(jobs)}

if with_split:
    flag = os.path.join(os.environ["HOME"], "flaky-flag")
    flaky = f"if [ -e {flag} ]; then echo second-try; exit 0; else touch {flag}; echo first-try; exit 3; fi"
    split = Job(
        name="split",
        application=Executable(exe="/bin/sh"),
        backend=Local(),
        do_auto_resubmit=True,
        splitter=ArgSplitter(args=[["-c", f"sleep 0.3; echo sj{i}; exit 0"] for i in range(4)] + [["-c", flaky]]),
    )
    split.submit()
    jobs.append(split)
    expected[str(split.id)] = "completed"
    expected.update({f"{split.id}.{i}": "completed" for i in range(5)})

all_final = wait_final(jobs, limit=150)
# The bus is fed through the loop thread: give the last changes a moment to land.
deadline = time.time() + 10
while time.time() < deadline:
    bus = bus_view(monitor)
    if all(bus.get(job_id, {}).get("status") == status for job_id, status in expected.items()):
        break
    time.sleep(0.1)
write_result(
    {
        "mode": "drive" if monitor.drive else "observe",
        "all_final": all_final,
        "seconds": time.time() - started,
        "expected": expected,
        "registry": registry_view(jobs),
        "bus": bus_view(monitor),
        "split_submit_counters": [sj.info.submit_counter for sj in jobs[-1].subjobs] if with_split else [],
    }
)
