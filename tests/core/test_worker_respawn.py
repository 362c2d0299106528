"""A subprocess worker that cannot be replaced is retried with backoff; its slot comes back."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from monitor_core.backends import ProcessRunner, WorkerDied

from ..conftest import until

pytestmark = pytest.mark.timeout(60)

# A client any Python has: a Counter, whose total() answers 0.
FACTORY = "collections:Counter"


async def test_a_failed_respawn_is_retried_reported_and_the_slot_comes_back(tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.symlink_to(sys.executable)
    runner = ProcessRunner(FACTORY, {}, size=1, name="test", python=str(python), respawn_backoff=(0.05, 0.2))
    await runner.start()
    try:
        assert await runner.call("total") == 0
        # The interpreter goes away (an upgrade, a full /tmp); then the only worker dies.
        python.unlink()
        (pid,) = runner.worker_pids
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerDied):
            await runner.call("total")
        await until(lambda: runner.statistics().respawn_failures >= 3, within=10)
        assert runner.statistics().slots_empty == 1
        # A call waits for the slot rather than failing for good, and gets it once a worker starts.
        waiting = asyncio.create_task(runner.call("total"))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        python.symlink_to(sys.executable)
        assert await asyncio.wait_for(waiting, timeout=10) == 0
        statistics = runner.statistics()
        assert statistics.slots_empty == 0
        assert statistics.restarts == 1
        assert len(runner.worker_pids) == 1
    finally:
        await runner.close()


async def test_closing_stops_the_retries(tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.symlink_to(sys.executable)
    runner = ProcessRunner(FACTORY, {}, size=1, name="test", python=str(python), respawn_backoff=(0.05, 0.1))
    await runner.start()
    python.unlink()
    (pid,) = runner.worker_pids
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerDied):
        await runner.call("total")
    await until(lambda: runner.statistics().respawn_failures >= 1, within=10)
    await asyncio.wait_for(runner.close(), timeout=5)
    failures = runner.statistics().respawn_failures
    await asyncio.sleep(0.3)
    assert runner.statistics().respawn_failures == failures
