"""A viewer attaching at any time gets its snapshot made a slice of the loop at a time, and an exact stream after it."""

from __future__ import annotations

import asyncio

import pytest

import monitor_core._scheduler as scheduler_module
from monitor_core import JobAdded, JobChanged, JobStatus, Snapshot, StateFold
from monitor_core._time_slice import TimeSlice
from monitor_core.backends import Capabilities

from .conftest import MakeScheduler
from .fakes import ScriptedBackend, specs


async def test_a_snapshot_made_while_jobs_change_is_followed_by_exactly_the_changes_it_lacks(
    make_scheduler: MakeScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Slices of 40 records, so that polls answer between them however fast this machine is.
    monkeypatch.setattr(scheduler_module, "TimeSlice", lambda **_: TimeSlice(0.0, check_every=40))
    backend = ScriptedBackend(
        "b",
        caps=Capabilities(max_batch=200, max_concurrency=2, poll_interval=0.01, call_timeout=5),
        timeline=(JobStatus.RUNNING, JobStatus.RUNNING, JobStatus.COMPLETED),
    )
    async with make_scheduler([backend]) as scheduler:
        await scheduler.submit(specs(2000, "b"))
        turns = 0

        async def tick() -> None:
            nonlocal turns
            while True:
                await asyncio.sleep(0)
                turns += 1

        ticker = asyncio.create_task(tick())
        # Jobs submitted while the snapshot is made: not in it, their JobAdded after it.
        adder = asyncio.create_task(scheduler.submit(specs(50, "b")))
        changes_before = scheduler.book.transitions
        subscription = await scheduler.bus.subscribe_gradually(name="late viewer")
        changed_meanwhile = scheduler.book.transitions - changes_before
        ticker.cancel()
        assert len(await adder) == 50
        assert turns >= 2000 // 40 - 1, "the loop ran other work between the slices"
        assert changed_meanwhile > 0, "polls changed jobs while the snapshot was made"
        async with asyncio.timeout(60):
            await scheduler.wait_all_final()
        fold = StateFold()
        first = subscription.receive_nowait()
        assert isinstance(first, Snapshot)
        assert len(first.jobs) == 2000
        fold.apply(first)
        while (event := subscription.receive_nowait()) is not None:
            if isinstance(event, JobAdded):
                assert event.job.job_id not in fold.jobs, "a job added meanwhile is not in the snapshot"
            if isinstance(event, JobChanged):
                # A change the snapshot already holds would restate it; one it lacks would be lost.
                assert fold.jobs[event.job_id].status == event.old, event
            fold.apply(event)
        subscription.close()
        assert fold.final_states() == {job_id: job.status.value for job_id, job in scheduler.jobs.items()}
        assert len(fold.jobs) == 2050
        assert set(fold.final_states().values()) == {"completed"}
