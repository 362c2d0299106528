"""The local backend with real processes: exits seen by event, exit codes, outputs, adoption."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from monitor_core import EventBus, JobChanged, JobSpec, JobStatus, OutputSink, Scheduler
from monitor_core.backends import Capabilities, StatusReport
from monitor_core.backends.local import LocalBackend
from monitor_core.sim import local_command

from ..conftest import local_job_started, until
from .conftest import FAST

pytestmark = pytest.mark.timeout(60)

# A long safety-net poll: anything seen in time must have come from the exit event.
SLOW_POLL = Capabilities(max_batch=100, max_concurrency=1, fetch_concurrency=2, push_updates=True, poll_interval=600)


async def polled_until_final(backend: LocalBackend, backend_id: str) -> StatusReport:
    """Poll as the lane would, without events, until the backend reports a final status."""
    async with asyncio.timeout(10):
        while True:
            (report,) = (await backend.poll([backend_id])).reports
            if report.status.is_final:
                return report
            await asyncio.sleep(0.05)


def spec(name: str, duration: float, code: int) -> JobSpec:
    return JobSpec(name=name, backend="local", command=local_command(name, duration, code))


async def test_exits_are_detected_by_event_with_exit_codes_and_outputs(tmp_path: Path) -> None:
    bus = EventBus()
    backend = LocalBackend(tmp_path / "local", capabilities=SLOW_POLL)
    async with Scheduler([backend], bus=bus, outputs=OutputSink(tmp_path / "out"), config=FAST) as scheduler:
        subscription = bus.subscribe()
        jobs = await scheduler.submit([spec("ok", 0.2, 0), spec("bad", 0.1, 3), spec("quick", 0.0, 0)])
        async with asyncio.timeout(20):
            await scheduler.wait_all_final()
        subscription.close()
        changes = [e async for e in subscription if isinstance(e, JobChanged)]
    ok, bad, quick = jobs
    assert (ok.status, ok.exit_code) == (JobStatus.COMPLETED, 0)
    assert (bad.status, bad.exit_code) == (JobStatus.FAILED, 3)
    assert quick.status == JobStatus.COMPLETED
    # Nothing was polled (interval 600 s): the moves to completing came from exit events. The
    # calls are the one submission and the fetches.
    assert scheduler.lanes["local"].calls_total == scheduler.lanes["local"].fetches_total + 1
    completing = [c for c in changes if c.new == JobStatus.COMPLETING]
    assert {c.source for c in completing} == {"event"}
    assert (scheduler.outputs.path(ok.job_id) / "stdout").read_text() == "ok starting\nok done with 0\n"
    assert "simulated failure" in (scheduler.outputs.path(bad.job_id) / "stderr").read_text()


async def test_a_finished_job_keeps_no_process_object_and_leaves_its_ids_uninterned(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "local", capabilities=SLOW_POLL)
    async with Scheduler([backend], bus=EventBus(), outputs=OutputSink(tmp_path / "out"), config=FAST) as scheduler:
        (job,) = await scheduler.submit([spec("ok", 0.1, 0)])
        async with asyncio.timeout(20):
            await scheduler.wait_all_final()
    assert job.status == JobStatus.COMPLETED
    assert job.backend_id is not None
    # Kept for the session's life, per job: no reaped process's object (350 bytes)...
    assert backend._jobs[job.backend_id].process is None
    # ...and no entry in the interpreter's table of interned strings for its ids.
    assert sys.intern("".join(list(job.backend_id))) is not job.backend_id
    assert sys.intern("".join(list(job.job_id))) is not job.job_id


async def test_jobs_beyond_the_slot_limit_wait_then_run(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "local", max_running=2, capabilities=SLOW_POLL)
    async with Scheduler([backend], bus=EventBus(), outputs=OutputSink(tmp_path / "out"), config=FAST) as scheduler:
        jobs = await scheduler.submit([spec(f"j{i}", 0.1, 0) for i in range(6)])
        async with asyncio.timeout(20):
            await scheduler.wait_all_final()
    assert all(job.status == JobStatus.COMPLETED for job in jobs)


async def test_kill_ends_a_running_job_as_killed(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "local", capabilities=SLOW_POLL)
    async with Scheduler([backend], bus=EventBus(), outputs=OutputSink(tmp_path / "out"), config=FAST) as scheduler:
        (job,) = await scheduler.submit([spec("long", 30, 0)])
        await until(lambda: job.status == JobStatus.RUNNING, within=10)
        assert job.backend_id is not None
        await backend.kill(job.backend_id)
        async with asyncio.timeout(10):
            await scheduler.wait_all_final()
    assert job.status == JobStatus.KILLED


async def test_a_process_started_elsewhere_is_adopted_and_its_exit_found(tmp_path: Path) -> None:
    workdir = tmp_path / "local"
    first = LocalBackend(workdir, capabilities=SLOW_POLL)
    await first.start()
    (backend_id,) = await first.submit([spec("adopted", 0.5, 4)])
    await local_job_started(workdir, backend_id)
    await first.close()
    # A new backend (a restarted session) did not start this process: it adopts it.
    second = LocalBackend(workdir, capabilities=SLOW_POLL)
    await second.start()
    try:
        second.adopt(backend_id)
        report = await polled_until_final(second, backend_id)
        assert (report.status, report.exit_code) == (JobStatus.FAILED, 4)
    finally:
        await second.close()


async def test_process_table_fallback_when_no_pidfd(tmp_path: Path) -> None:
    workdir = tmp_path / "local"
    backend = LocalBackend(workdir, capabilities=SLOW_POLL)
    backend.pidfd_supported = False
    await backend.start()
    try:
        (backend_id,) = await backend.submit([spec("polled", 0.2, 0)])
        report = await polled_until_final(backend, backend_id)
        assert report.status == JobStatus.COMPLETED
    finally:
        await backend.close()


async def test_a_vanished_process_without_exit_code_is_failed_not_lost(tmp_path: Path) -> None:
    workdir = tmp_path / "local"
    backend = LocalBackend(workdir, capabilities=SLOW_POLL)
    await backend.start()
    try:
        (backend_id,) = await backend.submit([spec("victim", 30, 0)])
        pid, _ = await local_job_started(workdir, backend_id)
        os.killpg(pid, signal.SIGKILL)
        report = await polled_until_final(backend, backend_id)
        assert report.status == JobStatus.FAILED
    finally:
        await backend.close()


def test_pidfd_is_available_here() -> None:
    # The event path is the point of this backend; make sure CI exercises it.
    assert hasattr(os, "pidfd_open")
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    fd = os.pidfd_open(process.pid)
    os.close(fd)
    process.wait()


async def test_a_reused_pid_is_never_signalled_nor_taken_for_the_job(tmp_path: Path) -> None:
    # An earlier session's job directory names a pid that now belongs to another process
    # (started later, as after a reboot or a pid wrap): the kill must not reach it.
    stranger = await asyncio.to_thread(subprocess.Popen, ["sleep", "30"], start_new_session=True)
    try:
        started = psutil.Process(stranger.pid).create_time()
        directory = tmp_path / "local" / "L1"
        directory.mkdir(parents=True)
        (directory / "spec.json").write_text(json.dumps({"name": "old", "command": ["sleep", "30"]}))
        (directory / "pid").write_text(f"{stranger.pid} {started - 5.0}")
        backend = LocalBackend(tmp_path / "local", capabilities=SLOW_POLL)
        await backend.start()
        try:
            backend.adopt("L1")
            await backend.kill("L1")
            await asyncio.sleep(0.2)
            assert stranger.poll() is None, "a process that merely reused the pid was signalled"
            (report,) = (await backend.poll(["L1"])).reports
            assert report.status.is_final, "a stranger's process was taken for the job"
        finally:
            await backend.close()
    finally:
        stranger.kill()
        stranger.wait()


async def test_the_start_time_is_recorded_at_submit(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "local", capabilities=SLOW_POLL)
    await backend.start()
    try:
        (backend_id,) = await backend.submit([spec("timed", 5, 0)])
        pid, started = await local_job_started(tmp_path / "local", backend_id)
        assert abs(psutil.Process(pid).create_time() - started) < 0.05
        await backend.kill(backend_id)
        report = await polled_until_final(backend, backend_id)
        assert report.status == JobStatus.KILLED
    finally:
        await backend.close()


async def test_a_kill_while_the_jobs_process_is_being_started_ends_that_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spawn = LocalBackend._spawn

    def slow_spawn(backend: LocalBackend, job: Any) -> None:
        spawn(backend, job)
        time.sleep(0.5)  # on the starting thread: the process runs, the backend has not heard yet

    monkeypatch.setattr(LocalBackend, "_spawn", slow_spawn)
    backend = LocalBackend(tmp_path / "local", capabilities=SLOW_POLL)
    await backend.start()
    try:
        (backend_id,) = await backend.submit([spec("long", 30, 0)])
        pid, _ = await local_job_started(tmp_path / "local", backend_id)
        process = psutil.Process(pid)
        await backend.kill(backend_id)
        report = await polled_until_final(backend, backend_id)
        assert report.status == JobStatus.KILLED
        # Not only called killed: the process is gone.
        await until(lambda: not process.is_running() or process.status() == psutil.STATUS_ZOMBIE, within=10)
    finally:
        await backend.close()
