"""The ``local`` backend: jobs are real processes on this machine.

Each job gets a directory holding its spec, a wrapper that records the exit code in a
file, its pid, stdout and stderr. Exits of processes this backend started, and of those
it adopted after a restart, are detected the moment they happen through a pidfd on the
event loop; a process-table check answers polls, and covers any process a pidfd cannot
watch. Jobs beyond ``max_running`` wait their turn, as on a batch slot.

Every file read and write and every look at the process table runs on a worker thread: on
a slow or hung filesystem the loop goes on. A pid is signalled only while it is still the
process that was started (its start time, recorded at start, matches), never a process
that reused the pid after a restart.
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
from .._paths import joined
from .._time_slice import TimeSlice
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

__all__ = ["WRAPPER_NAME", "LocalBackend"]

log = logging.getLogger(__name__)

WRAPPER_NAME: Final = "__wrapper__.sh"
"""The script in each job's directory that runs the job: its process leads the job's own session."""
_WRAPPER: Final = """#!/bin/sh
cd "$(dirname "$0")" || exit 127
"$@" > stdout 2> stderr
code=$?
echo $code > __exitcode__.tmp && mv __exitcode__.tmp __exitcode__
exit $code
"""
_INTERNAL_FILES: Final = frozenset({WRAPPER_NAME, "__exitcode__", "__exitcode__.tmp", "__killed__", "spec.json", "pid"})

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
    directory_text: str
    """Its directory, kept as text: a ``Path`` a job, with the parts and text it caches, took
    300 bytes (3 MB of the demo's 10,000 local jobs, for the session's life)."""
    command: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    pid: int | None = None
    started_at: float | None = None
    pidfd: int | None = None
    status: JobStatus = JobStatus.SUBMITTED
    exit_code: int | None = None
    adopted: bool = False
    """Taken over from an earlier session and not yet read back from its directory."""

    @property
    def directory(self) -> Path:
        return Path(self.directory_text)


@dataclass(frozen=True, slots=True)
class _Probe:
    """What the job's directory and the process table say, read off the loop."""

    running: bool
    exit_code: int | None = None
    returncode: int | None = None
    killed: bool = False


@dataclass(frozen=True, slots=True)
class _Adoption:
    """An earlier session's job read back from its directory."""

    command: tuple[str, ...] | None
    pid: int | None = None
    started_at: float | None = None


_SAME_PROCESS: Final = 0.05
"""Most seconds between a recorded and a read start time of one process (clock ticks, rounding)."""


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
        self._starting: str | None = None
        """The job whose process is being started on a thread: a kill meanwhile waits for its pid."""
        self._kill_when_started = False
        self._running = 0
        self._next = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starter: asyncio.Task[None] | None = None
        self._start_wanted = asyncio.Event()
        self._exits: set[asyncio.Task[None]] = set()
        self.pidfd_supported = hasattr(os, "pidfd_open")

    def _first_free_number(self) -> int:
        self.workdir.mkdir(parents=True, exist_ok=True)
        numbers = [int(p.name[1:]) for p in self.workdir.glob("L*") if p.name[1:].isdigit()]
        return max(numbers, default=0) + 1

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._next = max(self._next, await asyncio.to_thread(self._first_free_number))
        self._starter = asyncio.create_task(self._start_waiting_jobs(), name=f"monitor[lane={self.name}].starter")

    async def close(self) -> None:
        tasks = [task for task in (self._starter, *self._exits) if task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for job in self._jobs.values():
            self._unwatch(job)

    # -- submission ---------------------------------------------------------------------

    async def submit(self, specs: Sequence[JobSpec]) -> list[str]:
        for spec in specs:
            if not spec.command:
                raise BackendError(f"job {spec.name!r} has no command")
        if self._next == 0:
            self._next = await asyncio.to_thread(self._first_free_number)
        numbered = []
        for spec in specs:
            numbered.append((f"L{self._next}", spec))
            self._next += 1
        await asyncio.to_thread(_make_job_directories, self.workdir, numbered)
        ids = []
        # The demo's 100,000 jobs have 10,000 local ones: made in one go, 30 ms of the loop.
        time_slice = TimeSlice()
        for backend_id, spec in numbered:
            self._jobs[backend_id] = _LocalJob(joined(self.workdir, backend_id), spec.command)
            self._waiting.append(backend_id)
            ids.append(backend_id)
            if time_slice.spent():
                await time_slice.yield_to_loop()
        self._start_wanted.set()
        return ids

    def adopt(self, backend_id: str) -> None:
        """Take over a job started by an earlier session.

        Its directory is read at the job's first poll, off the loop; a job whose directory
        is gone is then rejected as unknown.
        """
        if backend_id in self._jobs:
            return
        self._jobs[backend_id] = _LocalJob(joined(self.workdir, backend_id), status=JobStatus.RUNNING, adopted=True)

    async def _read_adopted(self, backend_ids: list[str]) -> None:
        readings = await asyncio.to_thread(lambda: {b: _read_adoption(self._jobs[b]) for b in backend_ids})
        for backend_id, reading in readings.items():
            job = self._jobs[backend_id]
            if not job.adopted:
                continue
            job.adopted = False
            if reading.command is None:
                continue  # no directory: the poll rejects it as unknown
            job.command = reading.command
            if reading.pid is None:
                job.status = JobStatus.SUBMITTED  # never started: it waits for a slot
                self._waiting.append(backend_id)
                self._start_wanted.set()
                continue
            job.pid, job.started_at = reading.pid, reading.started_at
            self._running += 1
            self._watch(backend_id, job)

    async def _start_waiting_jobs(self) -> None:
        while True:
            await self._start_wanted.wait()
            self._start_wanted.clear()
            while self._waiting and self._running < self.max_running:
                backend_id = self._waiting.popleft()
                job = self._jobs[backend_id]
                self._starting, self._kill_when_started = backend_id, False
                try:
                    await asyncio.to_thread(self._spawn, job)
                except OSError as exc:
                    log.error("%s: could not start %s: %s", self.name, backend_id, exc)
                    self._finish(backend_id, job, JobStatus.FAILED, 127, f"could not start: {exc}")
                    continue
                finally:
                    self._starting = None
                self._running += 1
                job.status = JobStatus.RUNNING
                self._report(StatusReport(backend_id, JobStatus.RUNNING, "started"))
                self._watch(backend_id, job)
                if self._kill_when_started and job.pid is not None:
                    await asyncio.to_thread(_signal_if_same, job.pid, job.started_at)

    def _spawn(self, job: _LocalJob) -> None:
        wrapper = job.directory / WRAPPER_NAME
        wrapper.write_text(_WRAPPER)
        job.process = subprocess.Popen(
            ["/bin/sh", str(wrapper), *job.command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        job.pid = job.process.pid
        # The start time is the process's identity: after a restart, a pid is signalled or
        # trusted as this job's only while the process under it started at this time.
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
        # Reading the exit code is file I/O: off the loop, then settled back on it.
        task = asyncio.ensure_future(self._settle_exited(backend_id, job))
        self._exits.add(task)
        task.add_done_callback(self._exits.discard)

    async def _settle_exited(self, backend_id: str, job: _LocalJob) -> None:
        probe = await asyncio.to_thread(_probe, job)
        self._settle(backend_id, job, probe)

    def _settle(self, backend_id: str, job: _LocalJob, probe: _Probe) -> StatusReport | None:
        """Resolve a job whose process may have ended; return the final report if so."""
        if job.status.is_final:
            return StatusReport(backend_id, job.status, "exited", job.exit_code)
        if probe.running:
            return None
        code = probe.exit_code if probe.exit_code is not None else probe.returncode
        if code is None:
            if not probe.killed:
                return self._finish(backend_id, job, JobStatus.FAILED, None, "process vanished without an exit code")
            code = -signal.SIGTERM
        if probe.killed:
            return self._finish(backend_id, job, JobStatus.KILLED, code, "killed")
        status = JobStatus.COMPLETED if code == 0 else JobStatus.FAILED
        return self._finish(backend_id, job, status, code, f"exit code {code}")

    def _finish(self, backend_id: str, job: _LocalJob, status: JobStatus, code: int | None, info: str) -> StatusReport:
        if job.status == JobStatus.RUNNING:
            self._running -= 1
            self._start_wanted.set()
        if job.process is not None and job.process.returncode is not None:
            # Reaped: nothing more to learn from it, and a ``Popen`` kept per finished job held
            # 350 bytes (3.5 MB of the demo's 10,000 local jobs). An unreaped one is kept, or
            # dropping it would leave the reaping to ``subprocess``'s next start.
            job.process = None
        job.status, job.exit_code = status, code
        report = StatusReport(backend_id, status, info, code)
        self._report(report)
        return report

    # -- the backend calls ----------------------------------------------------------------

    async def poll(self, backend_ids: Sequence[str]) -> PollResult:
        adopted = [b for b in backend_ids if (job := self._jobs.get(b)) is not None and job.adopted]
        if adopted:
            await self._read_adopted(adopted)
        result = PollResult()
        to_probe: list[tuple[str, _LocalJob]] = []
        for backend_id in backend_ids:
            job = self._jobs.get(backend_id)
            if job is None or not job.command:
                result.rejections.append(Rejection(backend_id, "unknown_job", "no such local job"))
            elif job.status == JobStatus.SUBMITTED:
                result.reports.append(StatusReport(backend_id, JobStatus.SUBMITTED, "waiting for a slot"))
            elif job.status.is_final:
                result.reports.append(StatusReport(backend_id, job.status, "exited", job.exit_code))
            else:
                to_probe.append((backend_id, job))
        if to_probe:
            probes = await asyncio.to_thread(lambda: [_probe(job) for _, job in to_probe])
            for (backend_id, job), probe in zip(to_probe, probes, strict=True):
                settled = self._settle(backend_id, job, probe)
                result.reports.append(settled or StatusReport(backend_id, JobStatus.RUNNING, f"pid {job.pid}"))
        return result

    async def fetch_output(self, backend_id: str, destination: Path) -> FetchResult:
        job = self._jobs.get(backend_id)
        directory = job.directory if job is not None else Path(joined(self.workdir, backend_id))
        return await asyncio.to_thread(_copy_outputs, backend_id, directory, destination)

    async def kill(self, backend_id: str) -> None:
        job = self._jobs.get(backend_id)
        if job is None:
            raise BackendError(f"{backend_id}: unknown job")
        if job.adopted:
            await self._read_adopted([backend_id])
        await asyncio.to_thread((job.directory / "__killed__").touch)
        if backend_id == self._starting:
            # Its process is being started and has no pid yet: marked "killed before it started",
            # it would run on. Signalled once started; its exit, with the mark, ends it as killed.
            self._kill_when_started = True
        elif job.status == JobStatus.SUBMITTED:
            with contextlib.suppress(ValueError):
                self._waiting.remove(backend_id)
            self._finish(backend_id, job, JobStatus.KILLED, None, "killed before it started")
        elif job.pid is not None and not await asyncio.to_thread(_signal_if_same, job.pid, job.started_at):
            log.warning("%s: %s's pid %d is another process now; not signalling it", self.name, backend_id, job.pid)


def _make_job_directories(workdir: Path, numbered: list[tuple[str, JobSpec]]) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    for backend_id, spec in numbered:
        directory = Path(joined(workdir, backend_id))
        directory.mkdir()
        (directory / "spec.json").write_text(json.dumps({"name": spec.name, "command": list(spec.command)}))


def _read_adoption(job: _LocalJob) -> _Adoption:
    try:
        spec = json.loads((job.directory / "spec.json").read_text())
        command = tuple(str(part) for part in spec["command"])
    except (OSError, ValueError, KeyError, TypeError):
        return _Adoption(None)
    try:
        pid_text, started_text = (job.directory / "pid").read_text().split()
        return _Adoption(command, int(pid_text), float(started_text))
    except FileNotFoundError:
        return _Adoption(command)
    except (OSError, ValueError):
        # A pid file cut short by a crash: the process may run, but which one it is is unknown.
        return _Adoption(command, -1, None)


def _read_exit(job: _LocalJob) -> int | None:
    try:
        return int((job.directory / "__exitcode__").read_text())
    except (OSError, ValueError):
        return None


def _is_same_process(pid: int, started_at: float | None) -> bool:
    """Whether ``pid`` is alive and still the process that started at ``started_at``."""
    if pid <= 0 or started_at is None:
        return False
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - started_at) > _SAME_PROCESS:
            return False  # the pid was reused by another process
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _probe(job: _LocalJob) -> _Probe:
    """Blocking: what the job's files and the process table say now."""
    returncode = None
    if job.process is not None:
        returncode = job.process.poll()
        if returncode is None:
            return _Probe(running=True)
    code = _read_exit(job)
    if code is None and job.process is None and job.pid is not None and _is_same_process(job.pid, job.started_at):
        return _Probe(running=True)
    return _Probe(running=False, exit_code=code, returncode=returncode, killed=(job.directory / "__killed__").exists())


def _signal_if_same(pid: int, started_at: float | None) -> bool:
    """SIGTERM the job's process group if ``pid`` is still that job's process; False if it is not."""
    if not _is_same_process(pid, started_at):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    return True


def _copy_outputs(backend_id: str, source: Path, destination: Path) -> FetchResult:
    if not source.is_dir():
        raise OutputUnavailable(f"{backend_id}: job directory is gone")
    names = []
    for path in sorted(source.iterdir()):
        if path.name in _INTERNAL_FILES or not path.is_file():
            continue
        shutil.copy2(path, destination / path.name)
        names.append(path.name)
    return FetchResult(tuple(names))
