"""Per-job status files on local disk, for the lanes Ganga watches by reading a file per job.

Ganga's Local backend reads each job's ``__jobstatus__`` file (``GangaCore/Lib/Localhost/
Localhost.py:440-472``: ``PID:`` lines while it runs, an ``EXITCODE:`` line once it ended);
the Batch backends read a status file per job in the same way. The services here are
simulated, so the orchestrator writes these files itself: one per job when it is submitted,
and the exit code appended at the moment the job ends at its service. The writer runs in the
orchestrator's process, so its CPU is not charged to any monitor.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

STATUS_FILE = "__jobstatus__"


def job_dir(root: Path, lane: str, number: int) -> Path:
    """Where the status file of the lane's ``number``-th job (from 0, in submission order) lives."""
    return root / lane / str(number)


def create(root: Path, lane: str, count: int) -> None:
    """One directory and status file per job of a lane, saying the job has started.

    Written before the jobs are submitted, so the time it takes delays no model.
    """
    for k in range(count):
        directory = job_dir(root, lane, k)
        directory.mkdir(parents=True)
        (directory / STATUS_FILE).write_text(f"START: {time.time():.3f}\nPID: {100000 + k}\nWRAPPER: {k + 1}\n")


async def write_exits(root: Path, ends: list[tuple[float, str, int, int]]) -> None:
    """Append ``EXITCODE:`` to each job's file at its end time: ``ends`` holds (wall time, lane, number, code)."""
    for at, lane, number, code in sorted(ends):
        delay = at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        path = job_dir(root, lane, number) / STATUS_FILE
        # Written whole and renamed, as a reader must never see half a line.
        text = path.read_text() + f"STOP: {time.time():.3f}\nEXITCODE: {code}\n"
        scratch = path.with_suffix(".tmp")
        scratch.write_text(text)
        os.replace(scratch, path)
