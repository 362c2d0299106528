"""On a slow filesystem the event loop goes on: no file operation of the local backend or the
store runs on it.

Every file operation and process-table read those parts use is made to take 50 ms (as on a
loaded network filesystem); the loop's lag is sampled every 5 ms meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import pathlib
import shutil
import sqlite3
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from monitor_core import Job, JobSpec, JobStatus, SessionStore
from monitor_core.backends.local import LocalBackend
from monitor_core.sim import local_command

pytestmark = pytest.mark.timeout(120)

DELAY = 0.05
_SLOW_PATH_METHODS = ("read_text", "write_text", "mkdir", "touch", "exists", "is_dir", "iterdir", "glob", "open")


def _slow(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def slowed(*args: Any, **kwargs: Any) -> Any:
        time.sleep(DELAY)
        return function(*args, **kwargs)

    return slowed


@pytest.fixture
def slow_filesystem(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _SLOW_PATH_METHODS:
        monkeypatch.setattr(pathlib.Path, name, _slow(getattr(pathlib.Path, name)))
    monkeypatch.setattr(shutil, "copy2", _slow(shutil.copy2))
    monkeypatch.setattr(sqlite3, "connect", _slow(sqlite3.connect))
    monkeypatch.setattr(psutil.Process, "create_time", _slow(psutil.Process.create_time))
    monkeypatch.setattr(psutil.Process, "status", _slow(psutil.Process.status))


class LagProbe:
    """Samples how late the loop wakes a 5 ms sleeper."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.005)
            self.lags.append(loop.time() - before - 0.005)

    async def stop(self) -> float:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return statistics.quantiles(self.lags, n=100)[98]


async def test_local_backend_and_store_keep_the_loop_free_on_a_slow_filesystem(
    tmp_path: Path, slow_filesystem: None
) -> None:
    probe = LagProbe()
    started = time.monotonic()

    store = SessionStore(tmp_path / "session.sqlite")
    await store.open()
    await store.set_meta("planned", "12")
    assert await store.get_meta("planned") == "12"
    assert await store.load_jobs() == []

    backend = LocalBackend(tmp_path / "local", max_running=12)
    await backend.start()
    try:
        specs = [JobSpec(name=f"j{i}", backend="local", command=local_command(f"j{i}", 0.3, 0)) for i in range(12)]
        ids = await backend.submit(specs)
        for backend_id in ids:
            store.mark_dirty(
                Job(
                    job_id=backend_id,
                    backend="local",
                    name=backend_id,
                    group="g",
                    backend_id=backend_id,
                    status=JobStatus.SUBMITTED,
                    status_since=0.0,
                    last_confirmed=0.0,
                )
            )
        assert await store.flush()
        final: set[str] = set()
        async with asyncio.timeout(60):
            while len(final) < len(ids):
                result = await backend.poll(ids)
                final |= {r.backend_id for r in result.reports if r.status.is_final}
                await asyncio.sleep(0.05)
        destination = tmp_path / "out"
        await asyncio.to_thread(destination.mkdir)
        fetched = await backend.fetch_output(ids[0], destination)
        assert "stdout" in fetched.files
        # A restarted backend adopts the jobs from their directories, and kills one.
        second = LocalBackend(tmp_path / "local")
        await second.start()
        for backend_id in ids:
            second.adopt(backend_id)
        result = await second.poll(ids)
        assert {r.status for r in result.reports} == {JobStatus.COMPLETED}
        await second.kill(ids[0])
        await second.close()
    finally:
        await backend.close()
        store.close()
    elapsed = time.monotonic() - started
    p99 = await probe.stop()
    # The work took seconds of slow file operations, none of them on the loop.
    assert elapsed > 2.0, "the filesystem was not slow: the test tests nothing"
    assert p99 < 0.010, f"loop lag p99 {p99 * 1000:.1f} ms on a slow filesystem"
