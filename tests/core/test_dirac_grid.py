"""The demo's simulated grid lives beside its session: found again, stopped when idle, journaled."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import psutil
import pytest

from monitor_core.sim import DiracAsyncClient, DiracSimConfig
from monitor_core.sim._grid import DiracGrid, read_grid_file
from monitor_core.sim.dirac_env import DIRAC_PACKAGE_ROOT
from monitor_core.sim.dirac_site.DIRAC._service import SERVICE_VARIABLE

from ..conftest import until

pytestmark = pytest.mark.timeout(60)

FAST = DiracSimConfig(latency_median=0.01, latency_per_job=0.0, queue_time=0.2, completing_time=0.1, seed=3)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_a_running_grid_is_found_again_and_stopped_once(tmp_path: Path) -> None:
    first = DiracGrid(tmp_path / "grid", FAST)
    port = await first.find_or_start()
    assert not first.found
    assert first.pid is not None
    # Its own process group and session: a signal to the session's group does not reach it.
    assert os.getpgid(first.pid) == first.pid != os.getpgid(0)
    again = DiracGrid(tmp_path / "grid", FAST)
    assert await again.find_or_start() == port
    assert again.found
    assert again.pid == first.pid
    await again.stop()
    await until(lambda: gone(first.pid), within=10)  # type: ignore[arg-type]
    assert read_grid_file(tmp_path / "grid") is None
    await first.stop()  # the same process, already gone: nothing to do, no one else signalled


async def test_an_idle_grid_stops_by_itself_and_the_next_takes_its_jobs_back(tmp_path: Path) -> None:
    grid = DiracGrid(tmp_path / "grid", FAST, idle_exit=1.0)
    port = await grid.find_or_start()
    client = DiracAsyncClient(port=port)
    specs = [{"name": f"j{i}", "duration": 0.3, "outcome": "done" if i % 2 else "failed"} for i in range(20)]
    ids = (await client.submitJobs(specs))["Value"]
    await client.killJob([ids[0]])
    assert grid.pid is not None
    await until(lambda: gone(grid.pid), within=15)  # type: ignore[arg-type]
    assert read_grid_file(tmp_path / "grid") is None
    await asyncio.sleep(0.5)  # every job's timeline runs on while no grid runs

    successor = DiracGrid(tmp_path / "grid", FAST, idle_exit=30)
    port = await successor.find_or_start()
    try:
        assert not successor.found
        assert successor.restored == 20
        assert successor.knows_earlier_jobs
        statuses = (await DiracAsyncClient(port=port).getJobStatus(ids))["Value"]
        assert sorted(int(k) for k in statuses) == ids
        assert statuses[str(ids[0])]["Status"] == "Killed"
        finals = {str(i): "Done" if n % 2 else "Failed" for n, i in enumerate(ids)}
        assert {k: v["Status"] for k, v in statuses.items() if k != str(ids[0])} == {
            k: v for k, v in finals.items() if k != str(ids[0])
        }
        # New jobs get new ids, after the journaled ones.
        (fresh,) = (await DiracAsyncClient(port=port).submitJobs([{"name": "new"}]))["Value"]
        assert fresh > max(ids)
    finally:
        await successor.stop()


async def test_a_grid_file_naming_a_reused_pid_is_not_trusted(tmp_path: Path) -> None:
    directory = tmp_path / "grid"
    directory.mkdir()
    # This test's own process, with another start time: a pid reused since the grid died.
    me = psutil.Process(os.getpid())
    (directory / "grid.json").write_text(json.dumps({"pid": os.getpid(), "started": me.create_time() - 60, "port": 9}))
    grid = DiracGrid(directory, FAST)
    await grid.find_or_start()
    try:
        assert not grid.found
        assert grid.pid != os.getpid()
    finally:
        await grid.stop()
    # Stopping checked identity too: this process is still here to tell.
    assert psutil.pid_exists(os.getpid())


async def test_a_live_session_keeps_its_grid_from_idling_out(tmp_path: Path) -> None:
    grid = DiracGrid(tmp_path / "grid", FAST, idle_exit=0.6)
    await grid.find_or_start()
    keeper = asyncio.create_task(grid.keep_alive())
    try:
        await asyncio.sleep(2.0)
        assert grid.pid is not None
        assert not gone(grid.pid)
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        await grid.stop()


async def test_the_stand_in_dirac_client_answers_more_ids_than_the_service_takes_at_once(tmp_path: Path) -> None:
    # Ganga asks DIRAC for numParallelJobs (1000) statuses at a time; the service answers at
    # most its bulk limit (500) per request, and DIRAC's client is the one that must cope.
    grid = DiracGrid(tmp_path / "grid", FAST, idle_exit=30)
    port = await grid.find_or_start()
    try:
        client = DiracAsyncClient(port=port)
        ids = (await client.submitJobs([{"name": f"j{i}", "duration": 60} for i in range(1200)]))["Value"]
        script = (
            "import json, sys\n"
            "from DIRAC.Interfaces.API.Dirac import Dirac\n"
            "answer = Dirac().getJobStatus(json.loads(sys.argv[1]))\n"
            "print(json.dumps({'OK': answer['OK'], 'ids': sorted(answer.get('Value', {}))}))\n"
        )
        env = {**os.environ, "PYTHONPATH": str(DIRAC_PACKAGE_ROOT), SERVICE_VARIABLE: f"127.0.0.1:{port}"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, json.dumps(ids), env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await process.communicate()
        answer = json.loads(out)
        assert answer == {"OK": True, "ids": sorted(ids)}
    finally:
        await grid.stop()
