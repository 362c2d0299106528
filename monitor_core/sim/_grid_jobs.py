"""Jobs that really run on the simulated grid: a sandbox in, a process, a sandbox out.

A job submitted with a description (executable, arguments, environment, input and output
sandboxes) waits in the queue for a drawn time and a free slot, then runs as a local
process in its own work directory, as a pilot would run it on a worker node: the input
sandbox is unpacked (tarballs inside it too), the executable's output goes to its log file,
and when it ends the files named by the output sandbox are packed. Its DIRAC status,
logging records and parameters follow what really happened.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import fnmatch
import io
import logging
import os
import random
import shutil
import sys
import tarfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ._dirac_service import ServiceError

__all__ = ["GridConfig", "GridJobs", "pack_files", "unpack_archive"]

log = logging.getLogger(__name__)

_FINAL: Final = frozenset({"Done", "Failed", "Killed", "Deleted"})
_TARBALLS: Final = (".tgz", ".tar.gz", ".tar")
_STAMP: Final = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True, slots=True)
class GridConfig:
    """How the grid runs real jobs. Times are seconds."""

    queue_min: float = 0.2
    """Shortest time a job waits before it may run."""
    queue_spread: float = 0.5
    """A job waits ``queue_min`` plus a uniform draw up to this much."""
    slots: int = 32
    """Jobs running at once; the others wait for a slot."""
    completing_time: float = 0.2
    """Time a finished job spends Completing (its output sandbox being uploaded)."""
    seed: int = 11

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-able keyword arguments."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(slots=True)
class _GridJob:
    job_id: int
    name: str
    workdir: Path
    executable: str
    arguments: str
    log_file: str
    environment: dict[str, str]
    output_patterns: list[str]
    parameters: dict[str, Any]
    run_after: float
    status: str = "Received"
    minor: str = "Job accepted"
    application: str = "Unknown"
    records: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    process: asyncio.subprocess.Process | None = None
    started: float | None = None
    ended: float | None = None
    done_at: float | None = None
    """Wall time the job became final at the service."""
    exit_code: int | None = None
    sandbox: bytes | None = None


def _now_stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime(_STAMP)


def pack_files(paths: list[Path], base: Path | None = None) -> bytes:
    """A gzipped tarball of files (by their base name, or relative to ``base``)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in paths:
            archive.add(path, arcname=str(path.relative_to(base)) if base else path.name, recursive=False)
    return buffer.getvalue()


def unpack_archive(data: bytes, destination: Path) -> list[str]:
    """Unpack a tarball into ``destination`` (safe members only); the names unpacked."""
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
        members = archive.getmembers()
        archive.extractall(destination, filter="data")
    return [member.name for member in members if member.isfile()]


class GridJobs:
    """The grid's real jobs, kept by DIRAC id, run on the server's event loop.

    Args:
        config: queue, slots and timing.
        root: where each job gets its work directory.
    """

    def __init__(self, config: GridConfig, root: Path) -> None:
        self.config = config
        self.root = root
        self._random = random.Random(config.seed)
        self._jobs: dict[int, _GridJob] = {}
        self._waiting: list[int] = []
        self._running = 0
        self._wakeup = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self.downloads: Counter[int] = Counter()
        """Output sandbox downloads per job."""

    def __contains__(self, job_id: object) -> bool:
        return isinstance(job_id, int) and job_id in self._jobs

    def start(self) -> None:
        """Start taking waiting jobs into free slots (on the running loop)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._runner = asyncio.get_running_loop().create_task(self._run_queue(), name="grid.queue")

    async def close(self) -> None:
        """Stop the queue and every job still running."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        for job in self._jobs.values():
            if job.process is not None and job.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    job.process.kill()

    # -- submission --------------------------------------------------------------------------

    def submit(self, job_id: int, description: dict[str, Any]) -> None:
        """Accept a job under ``job_id``: unpack its input sandbox and queue it.

        Raises:
            ServiceError: the description is malformed.
        """
        executable = description.get("executable")
        if not isinstance(executable, str) or not executable:
            raise ServiceError("the job has no executable")
        workdir = self.root / str(job_id)
        sandbox = description.get("input_sandbox") or ""
        try:
            if workdir.exists():
                shutil.rmtree(workdir)
            workdir.mkdir(parents=True)
            if sandbox:
                unpack_archive(base64.b64decode(sandbox), workdir)
        except (OSError, ValueError, tarfile.TarError) as exc:
            raise ServiceError(f"input sandbox refused: {exc}") from exc
        environment = description.get("environment") or {}
        patterns = description.get("output_sandbox") or []
        job = _GridJob(
            job_id=job_id,
            name=str(description.get("name", "")),
            workdir=workdir,
            executable=executable,
            arguments=str(description.get("arguments", "")),
            log_file=str(description.get("log_file") or "std.out"),
            environment={str(k): str(v) for k, v in dict(environment).items()},
            output_patterns=[str(p) for p in patterns],
            parameters=dict(description.get("parameters") or {}),
            run_after=time.monotonic() + self.config.queue_min + self._random.uniform(0, self.config.queue_spread),
        )
        self._jobs[job_id] = job
        self._record(job, "Received", "Job accepted", "Unknown")
        self._record(job, "Waiting", "Pilot Agent Submission", "Unknown")
        self._waiting.append(job_id)
        self._wakeup.set()

    def _record(self, job: _GridJob, status: str, minor: str, application: str) -> None:
        job.status, job.minor, job.application = status, minor, application
        job.records.append((status, minor, application, _now_stamp(), "JobWrapper"))
        if status in _FINAL and job.done_at is None:
            job.done_at = time.time()

    # -- running -----------------------------------------------------------------------------

    async def _run_queue(self) -> None:
        while True:
            self._wakeup.clear()
            now = time.monotonic()
            next_due: float | None = None
            still: list[int] = []
            for job_id in self._waiting:
                job = self._jobs[job_id]
                if job.status != "Waiting":
                    continue  # killed or deleted while waiting
                if job.run_after <= now and self._running < self.config.slots:
                    self._running += 1
                    asyncio.get_running_loop().create_task(self._run(job), name=f"grid.job-{job_id}")
                else:
                    still.append(job_id)
                    if job.run_after > now:
                        next_due = job.run_after if next_due is None else min(next_due, job.run_after)
            self._waiting = still
            timeout = None if next_due is None else max(0.0, next_due - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _command(self, job: _GridJob) -> list[str]:
        path = job.workdir / job.executable
        arguments = job.arguments.split()
        if job.executable.endswith(".py"):
            return [sys.executable, str(path), *arguments]
        if path.exists():
            path.chmod(path.stat().st_mode | 0o100)
            return [str(path), *arguments]
        return [job.executable, *arguments]

    async def _run(self, job: _GridJob) -> None:
        try:
            self._unpack_tarballs(job.workdir)
            self._record(job, "Matched", "Assigned", "Unknown")
            environment = {**os.environ, **job.environment, "DIRACJOBID": str(job.job_id)}
            with (job.workdir / job.log_file).open("wb") as output:
                job.process = await asyncio.create_subprocess_exec(
                    *self._command(job),
                    cwd=job.workdir,
                    env=environment,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=output,
                    stderr=asyncio.subprocess.STDOUT,
                )
                job.started = time.time()
                self._record(job, "Running", "Application", "Executing")
                code = await job.process.wait()
            job.ended = time.time()
            job.exit_code = code
            if job.status in ("Killed", "Deleted"):
                return
            self._record(job, "Completing", "Uploading Output Sandbox", f"Exited with {code}")
            job.sandbox = self._pack_output(job)
            await asyncio.sleep(self.config.completing_time)
            if job.status in ("Killed", "Deleted"):
                return
            if code == 0:
                self._record(job, "Done", "Execution Complete", "Finished successfully")
            else:
                self._record(job, "Failed", "Application Finished With Errors", f"Exited with {code}")
        except (OSError, tarfile.TarError) as exc:
            log.warning("grid job %d could not run: %s", job.job_id, exc)
            job.sandbox = job.sandbox or b""
            self._record(job, "Failed", "Job Wrapper Initialization", f"Could not start: {exc}")
        finally:
            self._running -= 1
            self._wakeup.set()

    @staticmethod
    def _unpack_tarballs(workdir: Path) -> None:
        # The job wrapper unpacks tarballs found in the input sandbox before the job starts.
        for path in sorted(workdir.iterdir()):
            if path.is_file() and path.name.endswith(_TARBALLS):
                with tarfile.open(path, mode="r:*") as archive:
                    archive.extractall(workdir, filter="data")

    @staticmethod
    def _pack_output(job: _GridJob) -> bytes:
        wanted = [job.log_file, *job.output_patterns]
        names = sorted(
            {
                entry.name
                for entry in job.workdir.iterdir()
                if entry.is_file() and any(fnmatch.fnmatch(entry.name, pattern) for pattern in wanted)
            }
        )
        return pack_files([job.workdir / name for name in names])

    # -- what DIRAC's services answer --------------------------------------------------------

    def _job(self, job_id: Any) -> _GridJob:
        try:
            return self._jobs[int(job_id)]
        except (KeyError, TypeError, ValueError):
            raise ServiceError(f"Job {job_id} not found") from None

    def status(self, job_id: int) -> dict[str, str]:
        """DIRAC's status record of a job."""
        job = self._jobs[job_id]
        return {"Status": job.status, "MinorStatus": job.minor, "Site": "LCG.Sim.org"}

    def logging_info(self, job_id: Any) -> list[tuple[str, str, str, str, str]]:
        """The job's logging records: (status, minor status, application status, UTC time, source)."""
        return list(self._job(job_id).records)

    def attributes(self, job_id: Any) -> dict[str, Any]:
        """The job's attributes (status, application status, site, name)."""
        job = self._job(job_id)
        return {
            "JobID": job.job_id,
            "JobName": job.name,
            "Status": job.status,
            "MinorStatus": job.minor,
            "ApplicationStatus": job.application,
            "Site": "LCG.Sim.org",
        }

    def parameters(self, job_id: Any) -> dict[str, Any]:
        """The job's parameters: those it was submitted with, then what the pilot reported."""
        job = self._job(job_id)
        found: dict[str, Any] = dict(job.parameters)
        if job.started is not None:
            found["HostName"] = "wn001.sim.org"
            found["CPUNormalizationFactor"] = "1.0"
        if job.started is not None and job.ended is not None:
            found["NormCPUTime(s)"] = f"{job.ended - job.started:.2f}"
            found["TotalCPUTime(s)"] = f"{job.ended - job.started:.2f}"
        return found

    def cpu_time(self, job_id: Any) -> float:
        """Seconds the job ran (so far)."""
        job = self._job(job_id)
        if job.started is None:
            return 0.0
        return (job.ended or time.time()) - job.started

    def peek(self, job_id: Any) -> str:
        """The tail of the job's output so far."""
        job = self._job(job_id)
        path = job.workdir / job.log_file
        return path.read_bytes()[-4096:].decode(errors="replace") if path.exists() else ""

    def output_sandbox(self, job_id: Any) -> bytes:
        """The job's output sandbox as a gzipped tarball.

        Raises:
            ServiceError: the job is unknown or has no output sandbox (yet).
        """
        job = self._job(job_id)
        if job.status not in _FINAL or job.sandbox is None:
            raise ServiceError(f"Job {job.job_id} is {job.status}: no output sandbox")
        self.downloads[job.job_id] += 1
        return job.sandbox

    def kill(self, job_ids: list[Any], status: str = "Killed") -> list[int]:
        """Stop jobs (``Killed``, or ``Deleted``); the ids acted on."""
        done = []
        for job_id in job_ids:
            job = self._jobs.get(int(job_id))
            if job is None:
                continue
            done.append(job.job_id)
            if job.status in _FINAL:
                continue
            self._record(job, status, "Marked for termination", "Unknown")
            if job.process is not None and job.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    job.process.kill()
        return done

    def reschedule(self, job_ids: list[Any]) -> list[int]:
        """Put finished jobs back in the queue to run again."""
        done = []
        for job_id in job_ids:
            job = self._jobs.get(int(job_id))
            if job is None or job.status not in _FINAL:
                continue
            job.sandbox, job.exit_code, job.started, job.ended, job.done_at = None, None, None, None, None
            job.run_after = time.monotonic() + self.config.queue_min
            self._record(job, "Waiting", "Job Rescheduled", "Unknown")
            self._waiting.append(job.job_id)
            done.append(job.job_id)
        self._wakeup.set()
        return done

    def times(self) -> dict[str, dict[str, Any]]:
        """Each job's status and wall times: when it started, ended and became final at the service."""
        return {
            str(job.job_id): {"status": job.status, "started": job.started, "ended": job.ended, "final": job.done_at}
            for job in self._jobs.values()
        }

    def statistics(self) -> dict[str, Any]:
        """Jobs by status, running processes, and sandbox downloads per job."""
        by_status = Counter(job.status for job in self._jobs.values())
        return {
            "grid_jobs": len(self._jobs),
            "grid_status": dict(by_status),
            "running_processes": self._running,
            "sandbox_downloads": {str(k): v for k, v in self.downloads.items()},
        }
