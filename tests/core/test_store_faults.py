"""A full disk under the session's store loses nothing and stops no monitoring.

The store lives on a real tmpfs of a few hundred kilobytes; a filler file takes the rest of
it, so SQLite's writes fail as on a full disk, then room is made and the store catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor_core import EventBus, Job, JobStatus, LocalFault, OutputSink, Scheduler, SessionStore
from monitor_core.backends import Capabilities

from ..conftest import until
from .conftest import FAST
from .fakes import ScriptedBackend, specs

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs, mounted for the test (needs root; CI runs as root)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if result.returncode != 0:
        reason = f"cannot mount a tmpfs: {result.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk``; return the filler, whose removal frees them."""
    filler = disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as stream:
        while True:
            stream.write(b"\0" * 4096)
            stream.flush()
    return filler


def job(number: int) -> Job:
    return Job(
        job_id=str(number),
        backend="grid",
        name=f"job-{number}-{uuid.uuid4().hex * 4}",  # wide rows, so that the batch needs pages
        group="g",
        backend_id=f"b{number}",
        status=JobStatus.RUNNING,
        status_since=1.0,
        last_confirmed=1.0,
    )


async def cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def saved_jobs(path: Path) -> list[Job]:
    """What a store file holds, read by a store of its own, as the next session would."""
    reopened = SessionStore(path)
    await reopened.open()
    try:
        return await reopened.load_jobs()
    finally:
        reopened.close()


async def test_a_failed_flush_keeps_its_batch_flags_the_fault_and_catches_up(tiny_disk: Path) -> None:
    faults: list[LocalFault] = []
    store = SessionStore(tiny_disk / "session.sqlite", publish=lambda e: faults.append(e))  # type: ignore[arg-type]
    await store.open()
    assert await store.flush()
    filler = fill(tiny_disk)
    jobs = [job(n) for n in range(2000)]
    for each in jobs:
        store.mark_dirty(each)
    flusher = asyncio.create_task(store.run_flusher(every=0.02))
    await until(lambda: store.failures >= 3)
    assert store.failing
    assert store.unsaved == 2000, "the failed batch must stay dirty"
    assert [f.cleared for f in faults] == [False], "one fault while it lasts, not one per attempt"
    assert faults[0].backend is None
    assert "full" in faults[0].error, faults[0].error
    # Changes made while the disk is full are kept too, newest state winning.
    jobs[0].status = JobStatus.COMPLETED
    store.mark_dirty(jobs[0])
    filler.unlink()
    await until(lambda: not store.failing, within=60)
    assert [f.cleared for f in faults] == [False, True]
    assert store.unsaved == 0
    await cancel(flusher)
    store.close()
    saved = {j.job_id: j for j in await saved_jobs(tiny_disk / "session.sqlite")}
    assert len(saved) == 2000
    assert saved["0"].status == JobStatus.COMPLETED


async def test_monitoring_goes_on_while_the_store_cannot_write(tiny_disk: Path, tmp_path: Path) -> None:
    bus = EventBus()
    subscription = bus.subscribe(name="test")
    store = SessionStore(tiny_disk / "session.sqlite", publish=bus.publish, retry_cap=0.2)
    await store.open()
    backend = ScriptedBackend("grid", caps=Capabilities(max_batch=50, poll_interval=0.05))
    async with Scheduler([backend], bus=bus, outputs=OutputSink(tmp_path / "out"), store=store, config=FAST) as s:
        filler = fill(tiny_disk)
        submitted = await s.submit(specs(300, "grid"))  # accepted though not yet saved
        assert len(submitted) == 300
        async with asyncio.timeout(60):
            await s.wait_all_final()  # the lanes were never cancelled by the store's fault
        assert store.failing
        filler.unlink()
        await until(lambda: not store.failing and store.unsaved == 0, within=30)
    store.close()
    events = []
    while (event := subscription.receive_nowait()) is not None:
        events.append(event)
    flags = [e.cleared for e in events if isinstance(e, LocalFault)]
    assert flags[:1] == [False]
    assert flags[-1] is True
    saved = await saved_jobs(tiny_disk / "session.sqlite")
    assert len(saved) == 300
    assert all(j.status.is_final for j in saved)


async def test_a_flush_cancelled_before_its_write_began_keeps_its_batch(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "session.sqlite")
    await store.open()
    # The store's one thread is busy, so the flush below is queued behind it when cancelled.
    busy = threading.Event()
    blocker = store._executor.submit(busy.wait)
    store.mark_dirty(job(1))
    flushing = asyncio.create_task(store.flush())
    await asyncio.sleep(0.05)
    await cancel(flushing)
    busy.set()
    blocker.result()
    assert store.unsaved == 1
    flusher = asyncio.create_task(store.run_flusher(every=60))
    await asyncio.sleep(0)
    await cancel(flusher)
    store.close()
    assert [j.job_id for j in await saved_jobs(tmp_path / "session.sqlite")] == ["1"]
