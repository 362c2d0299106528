"""Submitting, tracking and planning many jobs yield to the loop when their slice is spent, not
after a fixed count of jobs: on a loaded machine a count is no bound on a step's time.

The slice is made spent at every look (or never spent) through the one function that decides a
task's share, so the tests count yields, not milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from monitor_core import Job, JobStatus, SessionStore, _time_slice
from monitor_core._lane import Lane
from monitor_core.backends import Capabilities

from ..conftest import until
from .conftest import FAST, MakeScheduler
from .fakes import ScriptedBackend, specs

JOBS = 2000


def _slices(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Every slice taken from now on lasts ``seconds`` (0: spent at its first look)."""
    monkeypatch.setattr(_time_slice, "_share", lambda _seconds: seconds)


async def _turns_given_away(work: Callable[[], Awaitable[object]]) -> int:
    """How many turns of the loop other tasks got while ``work`` ran."""
    turns = 0
    done = False

    async def count() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.create_task(count())
    await asyncio.sleep(0)
    turns = 0
    try:
        await work()
    finally:
        done = True
        await counter
    return turns


def _planner_rounds(monkeypatch: pytest.MonkeyPatch, planning: str) -> list[bool]:
    """What each call of the lane's ``planning`` method returned (True: some left for another round)."""
    rounds: list[bool] = []
    plan = getattr(Lane, planning)

    def counted(lane: Lane, *args: object) -> bool:
        more: bool = plan(lane, *args)
        rounds.append(more)
        return more

    monkeypatch.setattr(Lane, planning, counted)
    return rounds


def _backend() -> ScriptedBackend:
    # Polled only after the test's measurement: the polls' own yields would count too.
    return ScriptedBackend(
        "grid", caps=Capabilities(max_batch=10, max_concurrency=1, poll_interval=600.0), timeline=[JobStatus.RUNNING]
    )


@pytest.mark.parametrize("spent", [True, False])
async def test_submitting_and_tracking_many_jobs_yields_whenever_the_slice_is_spent(
    make_scheduler: MakeScheduler, monkeypatch: pytest.MonkeyPatch, spent: bool
) -> None:
    _slices(monkeypatch, 0.0 if spent else 60.0)
    async with make_scheduler([_backend()]) as scheduler:
        turns = await _turns_given_away(lambda: scheduler.submit(specs(JOBS, "grid")))
        assert len(scheduler.jobs) == JOBS
    if spent:
        # A look every 16 jobs made, every 64 tracked: a yield at each (1,000 jobs a step before).
        assert turns >= JOBS // 16 + JOBS // 64 - 2, turns
    else:
        assert turns < 10, turns


@pytest.mark.parametrize("spent", [True, False])
async def test_the_planner_batches_a_big_backlog_in_rounds_as_long_as_its_slice(
    make_scheduler: MakeScheduler, monkeypatch: pytest.MonkeyPatch, spent: bool
) -> None:
    rounds = _planner_rounds(monkeypatch, "_plan_due")
    backend = _backend()
    # Polls never answer, so every planned batch stays in the lane's operations to be counted.
    backend.mode = "hang"
    async with make_scheduler([backend], replace(FAST, drain_timeout=0.1)) as scheduler:
        await scheduler.submit(specs(JOBS, "grid"))
        _slices(monkeypatch, 0.0 if spent else 60.0)
        rounds.clear()
        scheduler.set_interval("grid", 0.01)
        lane = scheduler.lanes["grid"]
        await until(lambda: sum(len(op.job_ids) for op in lane.ops.values()) >= JOBS)
    if spent:
        # One batch of 10 a round: the planner looks at its slice after each batch.
        assert rounds.count(True) >= JOBS // 10 - 1, rounds.count(True)
    else:
        assert rounds.count(True) <= 1, rounds.count(True)


@pytest.mark.parametrize("spent", [True, False])
async def test_saving_many_jobs_lets_the_loop_in_whenever_the_slice_is_spent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spent: bool
) -> None:
    store = SessionStore(tmp_path / "session.sqlite")
    await store.open()
    jobs = [
        Job(job_id=str(n), backend="grid", backend_id=f"b{n}", status=JobStatus.SUBMITTED, status_since=1.0)
        for n in range(JOBS)
    ]
    _slices(monkeypatch, 0.0 if spent else 60.0)
    # What another task sees of the jobs marked for writing, each time it gets the loop.
    seen: set[int] = set()
    done = False

    async def watch() -> None:
        while not done:
            seen.add(len(store._dirty))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    await store.save_now(jobs)
    done = True
    await watcher
    assert len(await store.load_jobs()) == JOBS
    await store.aclose()
    partly_marked = {count for count in seen if 0 < count < JOBS}
    if spent:
        assert len(partly_marked) >= JOBS // 16 - 1, len(partly_marked)
    else:
        assert not partly_marked, partly_marked


@pytest.mark.parametrize("spent", [True, False])
async def test_polling_many_jobs_now_is_planned_in_rounds_as_long_as_its_slice(
    make_scheduler: MakeScheduler, monkeypatch: pytest.MonkeyPatch, spent: bool
) -> None:
    rounds = _planner_rounds(monkeypatch, "_plan_urgent")
    backend = _backend()
    # Polls never answer, so every planned batch stays in the lane's operations to be counted.
    backend.mode = "hang"
    async with make_scheduler([backend], replace(FAST, drain_timeout=0.1)) as scheduler:
        jobs = await scheduler.submit(specs(JOBS, "grid"))
        _slices(monkeypatch, 0.0 if spent else 60.0)
        for job in jobs:
            scheduler.refresh_now(job.job_id)
        scheduler.refresh_now(jobs[0].job_id)  # asked twice, polled once
        lane = scheduler.lanes["grid"]
        await until(lambda: sum(len(op.job_ids) for op in lane.ops.values()) >= JOBS)
        polled = [job_id for op in lane.ops.values() for job_id in op.job_ids]
    assert sorted(polled) == sorted(job.job_id for job in jobs)
    if spent:
        # One batch of 10 a round: the planner looks at its slice after each batch.
        assert rounds.count(True) >= JOBS // 10 - 1, rounds.count(True)
    else:
        assert rounds.count(True) == 0, rounds.count(True)
