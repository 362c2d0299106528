"""Two backends become active in the same instant: first under Ganga's own loop, then in drive mode.

Ganga's loop is off while a Local and an Interactive job are submitted, then switched on, so
its first registry scan finds both backends at once. Observe mode must show what Ganga's loop
then does; afterwards drive mode takes over, and a second pair is submitted in one instant.
"""

import os
import time

from common import bus_view, registry_view, wait_final, wait_for_viewers, write_result
from GangaCore.GPI import Executable, Interactive, Job, Local, disableMonitoring, enableMonitoring

from monitor_core.ganga import start_monitor, stop_monitor


def pair(tag):
    local = Job(name=f"local-{tag}", application=Executable(exe="/bin/sh", args=["-c", f"sleep 0.5; echo {tag}"]))
    local.backend = Local()
    interactive = Job(name=f"interactive-{tag}", application=Executable(exe="/bin/echo", args=[tag]))
    interactive.backend = Interactive()
    return [local, interactive]


disableMonitoring()
first = pair("a")
for job in first:
    job.submit()
monitor = start_monitor(drive=False, socket_path=os.environ["GM_SOCKET"])
wait_for_viewers(monitor)
enableMonitoring()  # Ganga's first scan sees Local and Interactive active together
wait_final(first, limit=8)
observed = {
    "registry": registry_view(first),
    "bus": bus_view(monitor),
    "backends": {
        record.name: {"lag": record.lag, "calls": record.calls_total} for record in monitor.snapshot().backends
    },
}
stop_monitor()

monitor = start_monitor(drive=True, socket_path=os.environ["GM_SOCKET"], poll_intervals={"Interactive": 1.0})
wait_for_viewers(monitor)
second = pair("b")
for job in second:
    job.submit()
driven_final = wait_final(first + second, limit=60)
time.sleep(0.5)
write_result(
    {
        "observed": observed,
        "driven_final": driven_final,
        "registry": registry_view(first + second),
        "bus": bus_view(monitor),
        "ids": {"first": [job.fqid for job in first], "second": [job.fqid for job in second]},
    }
)
