"""Adaptive intervals, backoff, and the lag the lanes report."""

from __future__ import annotations

import asyncio
import random

from monitor_core import AdaptiveInterval, Job, JobStatus
from monitor_core._policy import GroupRuntimes, backoff_delay

from ..conftest import until
from .conftest import MakeScheduler
from .fakes import ScriptedBackend, specs

POLICY = AdaptiveInterval()


def job(status: JobStatus, since: float, group: str = "g") -> Job:
    return Job(job_id="1", backend="b", group=group, status=status, status_since=since)


def test_fresh_submissions_are_polled_faster() -> None:
    assert POLICY.interval(job(JobStatus.SUBMITTED, since=100.0), 10.0, now=105.0, group=None) == 5.0
    assert POLICY.interval(job(JobStatus.SUBMITTED, since=100.0), 10.0, now=125.0, group=None) == 10.0


def test_a_job_near_its_groups_usual_running_time_is_polled_faster() -> None:
    runtimes = GroupRuntimes()
    for seconds in (50.0, 60.0, 70.0):
        runtimes.add(seconds)
    assert runtimes.mean == 60.0
    assert POLICY.interval(job(JobStatus.RUNNING, since=0.0), 10.0, now=20.0, group=runtimes) == 10.0
    assert POLICY.interval(job(JobStatus.RUNNING, since=0.0), 10.0, now=55.0, group=runtimes) == 5.0


def test_long_idle_jobs_are_polled_less_and_bounds_hold() -> None:
    interval = POLICY.interval(job(JobStatus.RUNNING, since=0.0), 10.0, now=1000.0, group=None)
    assert interval == 20.0
    for now in range(0, 2000, 37):
        value = POLICY.interval(job(JobStatus.RUNNING, since=0.0), 10.0, now=float(now), group=None)
        assert 10.0 / POLICY.fast <= value <= 10.0 * POLICY.slow


def test_backoff_grows_with_full_jitter_under_a_cap() -> None:
    rng = random.Random(1)
    delays = [[backoff_delay(attempt, base=0.5, cap=8.0, rng=rng) for _ in range(200)] for attempt in (1, 2, 3, 6)]
    assert all(0.25 <= d <= 0.5 for d in delays[0])
    assert all(0.5 <= d <= 1.0 for d in delays[1])
    assert all(4.0 <= d <= 8.0 for d in delays[3])
    assert len({round(d, 6) for d in delays[2]}) > 100, "jitter spreads retries apart"


async def test_lag_of_a_paused_lane_grows_and_recovers_after_resume(make_scheduler: MakeScheduler) -> None:
    backend = ScriptedBackend("grid", timeline=(JobStatus.RUNNING,))
    async with make_scheduler([backend]) as scheduler:
        await scheduler.submit(specs(5, "grid"))
        lane = scheduler.lanes["grid"]
        await backend.calls_started.wait()
        scheduler.pause("grid")
        await until(lambda: lane.lag(asyncio.get_running_loop().time()) > 0.2, within=5)
        scheduler.resume("grid")
        await until(lambda: lane.lag(asyncio.get_running_loop().time()) == 0.0, within=5)
        assert lane.record(asyncio.get_running_loop().time()).active_jobs == 5
