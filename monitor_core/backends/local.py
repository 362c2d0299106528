"""The ``local`` backend: jobs are real processes on this machine.

Each job gets a directory holding its spec, a wrapper that records the exit code in a
file, its pid, stdout and stderr. Exits of processes this backend started, and of those
it adopted after a restart, are detected the moment they happen through a pidfd on the
event loop; a process-table check answers polls, and covers any process a pidfd cannot
watch. Jobs beyond ``max_running`` wait their turn, as on a batch slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psutil

from .._model import JobSpec, JobStatus
from ._base import (
    Backend,
    BackendError,
    Capabilities,
    FetchResult,
    OutputUnavailable,
    PollResult,
    Rejection,
    StatusReport,
)

__all__ = ["LocalBackend"]

log = logging.getLogger(__name__)

_WRAPPER: Final = """#!/bin/sh
cd "$(dirname "$0")" || exit 127
"$@" > stdout 2> stderr
code=$?
echo $code > __exitcode__.tmp && mv __exitcode__.tmp __exitcode__
exit $code
"""
_INTERNAL_FILES: Final = frozenset(
    {"__wrapper__.sh", "__exitcode__", "__exitcode__.tmp", "__killed__", "spec.json", "pid"}
)

DEFAULT_CAPABILITIES: Final = Capabilities(
    max_batch=1000,
    max_concurrency=1,
    fetch_concurrency=4,
    push_updates=True,
    poll_interval=15.0,
    call_timeout=10.0,
)


@dataclass(slots=True)
class _LocalJob:
    directory: Path
    command: tuple[str, ...]
    process: subprocess.Popen[bytes] | None = None
    pid: int | None = None
    started_at: float | None = None
    pidfd: int | None = None
    status: JobStatus = JobStatus.SUBMITTED
    exit_code: int | None = None


class LocalBackend(Backend):
    """Runs jobs as local processes and watches them exit.

    Args:
        workdir: directory for the jobs' directories (kept across restarts).
        name: the backend's name on the bus.
        max_running: most jobs running at once; the rest wait.
        capabilities: overrides of the defaults.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        name: str = "local",
        max_running: int = 64,
        capabilities: Capabilities | None = None,
    ) -> None:
        super().__init__(name, capabilities or DEFAULT_CAPABILITIES)
        self.workdir = Path(workdir)
        self.max_running = max_running
        self._jobs: dict[str, _LocalJob] = {}
        self._waiting: deque[str] = deque()
        self._running = 0
        self._next = self._first_free_number()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starter: asyncio.Task[None] | None = None
        self._start_wanted = asyncio.Event()
        self.pidfd_supported = hasattr(os, "pidfd_open")

    def _first_free_number(self) -> int:
        if not self.workdir.is_dir():
            return 1
        numbers = [int(p.name[1:]) for p in self.workdir.glob("L*") if p.name[1:].isdigit()]
        return max(numbers, default=0) + 1

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.get_running_loop()
        self._starter = asyncio.create_task(self._start_waiting_jobs(), name=f"monitor[lane={self.name}].starter")

    async def close(self) -> None:
        if self._starter is not None:
            self._starter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starter
        for job in self._jobs.values():
            self._unwatch(job)

    # -- submission ---------------------------------------------------------------------

    async def submit(self, specs: Sequence[JobSpec]) -> list[str]:
        ids = []
        for spec in specs:
            if not spec.command:
                raise BackendError(f"job {spec.name!r} has no command")
            backend_id = f"L{self._next}"
            self._next += 1
            directory = self.workdir / backend_id
            directory.mkdir(parents=True)
            (directory / "spec.json").write_text(json.dumps({"name": spec.name, "command": list(spec.command)}))
            self._jobs[backend_id] = _LocalJob(directory, spec.command)
            self._waiting.append(backend_id)
            ids.append(backend_id)
        self._start_wanted.set()
        return ids

    def adopt(self, backend_id: str) -> None:
        """Take over a job started by an earlier session, from its directory.

        Raises:
            BackendError: there is no such job directory.
        """
        if backend_id in self._jobs:
            return
        directory = self.workdir / backend_id
        try:
            spec = json.loads((directory / "spec.json").read_text())
        except (OSError, ValueError) as exc:
            raise BackendError(f"{backend_id}: no job directory to adopt") from exc
        job = _LocalJob(directory, tuple(spec["command"]))
        self._jobs[backend_id] = job
        pid_file = directory / "pid"
        if not pid_file.exists():
            self._waiting.append(backend_id)
            self._start_wanted.set()
            return
        pid_text, started_text = pid_file.read_text().split()
        job.pid, job.started_at = int(pid_text), float(started_text)
        job.status = JobStatus.RUNNING
        if self._read_exit(backend_id, job) is None and self._alive(job):
            self._running += 1
            self._watch(backend_id, job)

    async def _start_waiting_jobs(self) -> None:
        while True:
            await self._start_wanted.wait()
            self._start_wanted.clear()
            while self._waiting and self._running < self.max_running:
                backend_id = self._waiting.popleft()
                job = self._jobs[backend_id]
                try:
                    await asyncio.to_thread(self._spawn, job)
                except OSError as exc:
                    log.error("%s: could not start %s: %s", self.name, backend_id, exc)
                    self._finish(backend_id, job, JobStatus.FAILED, 127, f"could not start: {exc}")
                    continue
                self._running += 1
                job.status = JobStatus.RUNNING
                self._report(StatusReport(backend_id, JobStatus.RUNNING, "started"))
                self._watch(backend_id, job)

    def _spawn(self, job: _LocalJob) -> None:
        wrapper = job.directory / "__wrapper__.sh"
        wrapper.write_text(_WRAPPER)
        job.process = subprocess.Popen(
            ["/bin/sh", str(wrapper), *job.command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        job.pid = job.process.pid
        job.started_at = psutil.Process(job.pid).create_time()
        (job.directory / "pid").write_text(f"{job.pid} {job.started_at}")

    # -- exit detection -----------------------------------------------------------------

    def _watch(self, backend_id: str, job: _LocalJob) -> None:
        if not self.pidfd_supported or job.pid is None or self._loop is None:
            return
        try:
            job.pidfd = os.pidfd_open(job.pid)
        except OSError:
            # Already gone or not ours to watch: the next poll reads the process table.
            return
        self._loop.add_reader(job.pidfd, self._on_exit, backend_id)

    def _unwatch(self, job: _LocalJob) -> None:
        if job.pidfd is not None:
            if self._loop is not None:
                self._loop.remove_reader(job.pidfd)
            os.close(job.pidfd)
            job.pidfd = None

    def _on_exit(self, backend_id: str) -> None:
        job = self._jobs[backend_id]
        self._unwatch(job)
        self._settle(backend_id, job)

    def _settle(self, backend_id: str, job: _LocalJob) -> StatusReport | None:
        """Resolve a job whose process may have ended; return the final report if so."""
        if job.status.is_final:
            return StatusReport(backend_id, job.status, "exited", job.exit_code)
        if job.process is not None and job.process.poll() is None:
            return None
        code = self._read_exit(backend_id, job)
        if code is None:
            if self._alive(job):
                return None
            if job.process is not None and job.process.returncode is not None:
                code = job.process.returncode
            elif (job.directory / "__killed__").exists():
                code = -signal.SIGTERM
            else:
                return self._finish(backend_id, job, JobStatus.FAILED, None, "process vanished without an exit code")
        if (job.directory / "__killed__").exists():
            return self._finish(backend_id, job, JobStatus.KILLED, code, "killed")
        status = JobStatus.COMPLETED if code == 0 else JobStatus.FAILED
        return self._finish(backend_id, job, status, code, f"exit code {code}")

    def _finish(self, backend_id: str, job: _LocalJob, status: JobStatus, code: int | None, info: str) -> StatusReport:
        if job.status == JobStatus.RUNNING:
            self._running -= 1
            self._start_wanted.set()
        job.status, job.exit_code = status, code
        report = StatusReport(backend_id, status, info, code)
        self._report(report)
        return report

    @staticmethod
    def _read_exit(backend_id: str, job: _LocalJob) -> int | None:
        try:
            return int((job.directory / "__exitcode__").read_text())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _alive(job: _LocalJob) -> bool:
        if job.pid is None:
            return False
        try:
            process = psutil.Process(job.pid)
            if job.started_at is not None and abs(process.create_time() - job.started_at) > 1.0:
                return False  # the pid was reused by another process
            return process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    # -- the backend calls ----------------------------------------------------------------

    async def poll(self, backend_ids: Sequence[str]) -> PollResult:
        result = PollResult()
        for backend_id in backend_ids:
            job = self._jobs.get(backend_id)
            if job is None:
                result.rejections.append(Rejection(backend_id, "unknown_job", "no such local job"))
            elif job.status == JobStatus.SUBMITTED:
                result.reports.append(StatusReport(backend_id, JobStatus.SUBMITTED, "waiting for a slot"))
            else:
                settled = self._settle(backend_id, job)
                result.reports.append(settled or StatusReport(backend_id, JobStatus.RUNNING, f"pid {job.pid}"))
        return result

    async def fetch_output(self, backend_id: str, destination: Path) -> FetchResult:
        job = self._jobs.get(backend_id)
        directory = job.directory if job is not None else self.workdir / backend_id
        if not directory.is_dir():
            raise OutputUnavailable(f"{backend_id}: job directory is gone")
        return await asyncio.to_thread(_copy_outputs, directory, destination)

    async def kill(self, backend_id: str) -> None:
        job = self._jobs.get(backend_id)
        if job is None:
            raise BackendError(f"{backend_id}: unknown job")
        (job.directory / "__killed__").touch()
        if job.status == JobStatus.SUBMITTED:
            with contextlib.suppress(ValueError):
                self._waiting.remove(backend_id)
            self._finish(backend_id, job, JobStatus.KILLED, None, "killed before it started")
        elif job.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.pid, signal.SIGTERM)


def _copy_outputs(source: Path, destination: Path) -> FetchResult:
    names = []
    for path in sorted(source.iterdir()):
        if path.name in _INTERNAL_FILES or not path.is_file():
            continue
        shutil.copy2(path, destination / path.name)
        names.append(path.name)
    return FetchResult(tuple(names))
