"""The live benchmark tells a local job the stopped demo left running (expected) from a leftover."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import psutil

from benchmarks.live.run import local_job_sessions
from monitor_core import JobSpec
from monitor_core.backends.local import LocalBackend
from monitor_core.sim._workload import local_command

from ..conftest import local_job_started, until


async def test_a_running_local_job_and_its_children_are_the_jobs_session_and_a_stranger_is_not(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    # The demo's local backend works in the state directory's "local".
    backend = LocalBackend(state_dir / "local")
    await backend.start()
    stranger = await asyncio.create_subprocess_exec("sleep", "30", start_new_session=True)
    spec = JobSpec(name="long", backend="local", command=local_command("long", 30, 0))
    (backend_id,) = await backend.submit([spec])
    try:
        pid, _ = await local_job_started(state_dir / "local", backend_id)
        wrapper = psutil.Process(pid)
        await until(lambda: wrapper.children(recursive=True))
        job_processes = [wrapper, *wrapper.children(recursive=True)]
        everyone = [*job_processes, psutil.Process(stranger.pid), psutil.Process(os.getpid())]

        sessions = local_job_sessions(everyone, state_dir)

        assert sessions == {wrapper.pid}
        assert all(os.getsid(process.pid) == wrapper.pid for process in job_processes)
        assert os.getsid(stranger.pid) not in sessions
        # Another run's state directory: these jobs are not its own.
        assert local_job_sessions(everyone, tmp_path / "elsewhere") == set()
    finally:
        stranger.kill()
        await stranger.wait()
        await backend.kill(backend_id)
        await backend.close()
