"""Helpers for the scripts the Ganga tests run inside headless Ganga sessions."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from GangaCore.GPI import Executable, Job, Local

FINAL = ("completed", "failed", "killed")
DURATIONS = (0.2, 0.4, 0.6, 0.8, 1.0)


def planned_exit_code(index: int) -> int:
    """Varied exit codes: most jobs succeed, some fail with 3, some with 1."""
    if index % 7 == 3:
        return 3
    if index % 11 == 5:
        return 1
    return 0


def local_job(index: int, name: str = "") -> Any:
    """A Local job that sleeps a little, prints its name and exits with its planned code."""
    duration = DURATIONS[index % len(DURATIONS)]
    command = f"sleep {duration}; echo job-{index}; exit {planned_exit_code(index)}"
    return Job(
        name=name or f"job-{index}", application=Executable(exe="/bin/sh", args=["-c", command]), backend=Local()
    )


def wait_final(jobs: list[Any], limit: float) -> bool:
    """Wait until every job is final in Ganga's registry; ``False`` if the limit passed first."""
    deadline = time.time() + limit
    while time.time() < deadline:
        if all(job.status in FINAL for job in jobs):
            return True
        time.sleep(0.1)
    return False


def wait_for_viewers(monitor: Any, count: int = 1, limit: float = 30.0) -> None:
    """Wait until ``count`` viewers are attached to the monitor's socket."""
    deadline = time.time() + limit
    while monitor.viewers() < count:
        if time.time() > deadline:
            raise RuntimeError(f"no viewer attached within {limit}s")
        time.sleep(0.05)


def stdout_of(job: Any) -> str | None:
    path = os.path.join(job.outputdir, "stdout")
    if not os.path.exists(path):
        return None
    with open(path) as stream:
        return stream.read()


def registry_view(jobs: list[Any]) -> dict[str, dict[str, Any]]:
    """Each job's (and subjob's) status, exit code and stdout, as Ganga's registry has them."""
    view: dict[str, dict[str, Any]] = {}
    for job in jobs:
        for one in [job, *list(job.subjobs)]:
            view[one.fqid] = {
                "status": one.status,
                "exitcode": getattr(one.backend, "exitcode", None),
                "stdout": stdout_of(one),
                "name": one.name,
            }
    return view


def bus_view(monitor: Any) -> dict[str, dict[str, Any]]:
    """Each job's status on the monitor's bus, in this process."""
    snapshot = monitor.snapshot()
    return {job.job_id: {"status": str(job.status), "exit_code": job.exit_code} for job in snapshot.jobs}


def write_result(data: dict[str, Any]) -> None:
    with open(os.environ["GM_RESULT"], "w") as stream:
        json.dump(data, stream, indent=1, default=str)
