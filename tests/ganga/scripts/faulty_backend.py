"""A Ganga backend whose monitoring call raises, then hangs, while Local jobs go on (drive mode)."""

import os
import threading
import time

from common import bus_view, local_job, registry_view, wait_final, wait_for_viewers, write_result
from GangaCore.GPI import Executable, Interactive, Job, jobs
from GangaCore.Lib.Interactive.Interactive import Interactive as InteractiveBackend

from monitor_core import SchedulerConfig
from monitor_core.ganga import start_monitor

HANG = 4.0
original = InteractiveBackend.__dict__["updateMonitoringInformation"].__func__
calls = {"n": 0}
lock = threading.Lock()


def faulty(jobs):
    with lock:
        calls["n"] += 1
        call = calls["n"]
    if call <= 4:
        raise RuntimeError(f"simulated failure of call {call}")
    if call == 5:
        time.sleep(HANG)  # far past the call timeout
        raise RuntimeError("simulated failure after hanging")
    return original(jobs)


InteractiveBackend.updateMonitoringInformation = staticmethod(faulty)

monitor = start_monitor(
    drive=True,
    socket_path=os.environ["GM_SOCKET"],
    call_timeout=1.0,
    poll_intervals={"Interactive": 0.5},
    scheduler=SchedulerConfig(breaker_threshold=3, breaker_reset=0.5, backoff_base=0.1, backoff_cap=0.5, max_retries=1),
)
wait_for_viewers(monitor)

troubled = Job(name="troubled", application=Executable(exe="/bin/echo", args=["fine"]), backend=Interactive())
troubled.submit()
locals_ = [local_job(index) for index in range(5)]
for job in locals_:
    job.submit()
locals_final = wait_final(locals_, limit=60)
troubled_when_locals_done = troubled.status

# The session stays usable meanwhile: the jobs table, and one more job.
table = str(jobs)
late = local_job(7, name="late")
late.submit()
late_final = wait_final([late], limit=30)

troubled_final = wait_final([troubled], limit=60)
time.sleep(0.5)
write_result(
    {
        "locals_final": locals_final,
        "late_final": late_final,
        "troubled_final": troubled_final,
        "troubled_when_locals_done": troubled_when_locals_done,
        "table_mentions_troubled": "troubled" in table,
        "faulty_calls": calls["n"],
        "registry": registry_view([*locals_, late, troubled]),
        "bus": bus_view(monitor),
        "troubled_id": troubled.fqid,
    }
)
