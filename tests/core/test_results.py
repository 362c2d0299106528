"""Results in hand: fetch planning within the allowance, fetch failures, manual collection, local faults."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from monitor_core import (
    CollectOutput,
    EventBus,
    JobChanged,
    JobStatus,
    LagSampled,
    LocalFault,
    OutputSink,
    Rescheduled,
    Scheduler,
    SchedulerConfig,
    execute_command,
)
from monitor_core.backends import Capabilities

from ..conftest import until
from .conftest import FAST, MakeScheduler
from .fakes import ScriptedBackend, specs
from .test_scheduler import Recorder, settle

pytestmark = pytest.mark.timeout(60)


async def test_polls_are_not_delayed_by_a_fetch_flood(make_scheduler: MakeScheduler) -> None:
    # 240 calls a minute. Ten long jobs need two polls a second (120 a minute, 180 kept with the
    # margin); a hundred finished jobs want their outputs at once. Fetches get what polls leave.
    caps = Capabilities(
        max_batch=5, max_concurrency=2, fetch_concurrency=8, poll_interval=1.0, max_calls_per_minute=240
    )
    backend = ScriptedBackend("grid", caps=caps, timeline=(JobStatus.RUNNING,))
    async with make_scheduler([backend], config=replace(FAST, sample_every=0.1)) as scheduler:
        recorder = Recorder(scheduler.bus.subscribe())
        await scheduler.submit(specs(10, "grid", group="long"))
        backend.default_timeline = [JobStatus.COMPLETED]
        await scheduler.submit(specs(100, "grid", group="short"))
        lane = scheduler.lanes["grid"]
        await until(lambda: lane.fetches_total > 0, within=10)
        started = time.monotonic()
        await asyncio.sleep(6.0)
        recorder.stop()
        samples = [e.backend for e in recorder.of(LagSampled) if e.at >= time.time() - (time.monotonic() - started)]  # type: ignore[union-attr]
    assert max(s.fetches_queued for s in samples) > 20, "the test needs a flood of queued fetches"
    # Every sample: the long jobs were confirmed on time (lag within one call's worth of slack).
    assert max(s.lag for s in samples) < 0.5
    assert max(s.calls_per_minute for s in samples) <= 240
    # The flood is visible: results lag grows and the bound is stated.
    assert samples[-1].results_lag > 3.0
    assert samples[-1].collect_bound is not None
    assert samples[-1].collect_bound > 0


async def test_a_fetch_refused_a_connection_waits_for_the_service_however_often_it_is_refused(
    make_scheduler: MakeScheduler,
) -> None:
    backend = ScriptedBackend("grid")
    backend.fetch_mode = "refuse"  # a service stopping, or not yet started
    config = replace(FAST, fetch_max_attempts=3, breaker_threshold=100)
    async with make_scheduler([backend], config=config) as scheduler:
        (job,) = await scheduler.submit(specs(1, "grid"))
        await until(lambda: len(backend.log.fetches) >= 10, within=10)
        assert job.status == JobStatus.COMPLETING, "a refused connection was held against the job"
        backend.fetch_mode = "ok"
        await settle(scheduler)
    assert job.status == JobStatus.COMPLETED
    assert job.collect_error is None
    assert scheduler.counters["outputs_collected"] == 1


async def test_a_fetch_that_fails_every_attempt_is_failed_to_collect_and_a_manual_retry_collects_it_once(
    make_scheduler: MakeScheduler,
) -> None:
    backend = ScriptedBackend("grid")
    backend.fetch_mode = "fail"
    config = replace(FAST, fetch_max_attempts=3, breaker_threshold=100)
    async with make_scheduler([backend], config=config) as scheduler:
        recorder = Recorder(scheduler.bus.subscribe())
        (job,) = await scheduler.submit(specs(1, "grid"))
        await settle(scheduler)
        assert job.status == JobStatus.FAILED
        assert job.collect_error is not None
        assert "grid is down" in job.collect_error
        assert "after 3 attempts" in job.collect_error
        assert len(backend.log.fetches) == 3
        backend.fetch_mode = "ok"
        ack = execute_command(scheduler, CollectOutput(job_id=job.job_id))
        assert ack.ok, ack.message
        await until(lambda: job.status == JobStatus.COMPLETED, within=10)
        again = execute_command(scheduler, CollectOutput(job_id=job.job_id))
        await asyncio.sleep(0.2)
        recorder.stop()
    assert not again.ok
    assert "already collected" in again.message
    assert job.collect_error is None
    assert len(backend.log.fetches) == 4
    assert scheduler.counters["outputs_collected"] == 1
    moves = [(e.old, e.new, e.collect_error) for e in recorder.of(JobChanged) if e.job_id == job.job_id]  # type: ignore[union-attr]
    assert moves[-2][:2] == (JobStatus.COMPLETING, JobStatus.FAILED)
    assert moves[-2][2]
    assert moves[-1] == (JobStatus.FAILED, JobStatus.COMPLETED, None)


async def test_a_users_request_for_outputs_jumps_the_fetch_queue(make_scheduler: MakeScheduler) -> None:
    # One fetch at a time (a blocking client's pool of one), 0.05 s each: a queue builds up.
    caps = Capabilities(max_batch=50, max_concurrency=1, fetch_concurrency=1, blocking=True, poll_interval=0.05)
    backend = ScriptedBackend("grid", caps=caps, timeline=(JobStatus.COMPLETED,))
    backend.fetch_delay = 0.05
    async with make_scheduler([backend]) as scheduler:
        jobs = await scheduler.submit(specs(30, "grid"))
        lane = scheduler.lanes["grid"]
        await until(lambda: lane.record(0).fetches_queued >= 20, within=10)
        last = jobs[-1]
        done_before = len(backend.log.fetches)
        assert execute_command(scheduler, CollectOutput(job_id=last.job_id)).ok
        await until(lambda: last.status == JobStatus.COMPLETED, within=5)
        # Fetched by the next call after the one in flight, ahead of the others.
        assert last.backend_id in backend.log.fetches[done_before : done_before + 2]
        await settle(scheduler)
    assert sorted(backend.log.fetches) == sorted(job.backend_id for job in jobs)


async def test_collect_output_refuses_what_cannot_be_collected(make_scheduler: MakeScheduler) -> None:
    backend = ScriptedBackend("grid", timeline=(JobStatus.RUNNING,))
    async with make_scheduler([backend]) as scheduler:
        (job,) = await scheduler.submit(specs(1, "grid"))
        running = execute_command(scheduler, CollectOutput(job_id=job.job_id))
        unknown = execute_command(scheduler, CollectOutput(job_id="nope"))
    assert not running.ok
    assert "only finished jobs" in running.message
    assert not unknown.ok
    assert "no job" in unknown.message


async def test_a_disk_fault_is_that_lanes_fault_and_loses_nothing(make_scheduler: MakeScheduler) -> None:
    broken, healthy = ScriptedBackend("broken"), ScriptedBackend("healthy")
    config = replace(FAST, local_fault_backoff=0.05)
    async with make_scheduler([broken, healthy], config=config) as scheduler:
        recorder = Recorder(scheduler.bus.subscribe())
        sink = scheduler.outputs
        commit, disk_full = sink.commit, [True]

        def failing_commit(job_id: str, staging: Path) -> bool:
            if disk_full[0] and scheduler.jobs[job_id].backend == "broken":
                raise OSError(errno.ENOSPC, "No space left on device")
            return commit(job_id, staging)

        sink.commit = failing_commit  # type: ignore[method-assign]
        stuck = await scheduler.submit(specs(5, "broken"))
        fine = await scheduler.submit(specs(5, "healthy"))
        await until(lambda: all(job.status == JobStatus.COMPLETED for job in fine), within=10)
        assert all(job.status == JobStatus.COMPLETING for job in stuck)
        disk_full[0] = False
        await settle(scheduler)
        await asyncio.sleep(0)
        recorder.stop()
    faults = list(recorder.of(LocalFault))
    assert faults[0].backend == "broken"
    assert "No space left" in faults[0].error
    assert faults[-1].cleared  # type: ignore[union-attr]
    assert all(job.status == JobStatus.COMPLETED for job in stuck)
    assert scheduler.counters["outputs_collected"] == 10
    assert not list(sink.root.glob(".fetch-*")), "failed attempts leave no staging directories"


def hedging_grid() -> ScriptedBackend:
    """A grid whose fetches answer in 10 ms: after 30 of them, a slower one is worth hedging."""
    caps = Capabilities(max_batch=50, max_concurrency=2, fetch_concurrency=4, poll_interval=0.05, call_timeout=30)
    backend = ScriptedBackend("grid", caps=caps)
    backend.fetch_delay = 0.01
    return backend


async def test_a_slow_fetch_is_hedged_and_collected_once(make_scheduler: MakeScheduler) -> None:
    backend = hedging_grid()
    async with make_scheduler([backend]) as scheduler:
        await scheduler.submit(specs(30, "grid"))
        await settle(scheduler)  # enough fetch latencies for a p95
        backend.hang_first_fetch = {f"grid-{n}" for n in range(31, 36)}
        started = time.monotonic()
        tail = await scheduler.submit(specs(5, "grid"))
        await settle(scheduler)
        took = time.monotonic() - started
    lane = scheduler.lanes["grid"]
    assert all(job.status == JobStatus.COMPLETED for job in tail)
    assert lane.hedges_total >= 5
    assert took < 5, "the hedge answered long before the 30 s timeout"
    assert scheduler.counters["outputs_collected"] == 35


async def test_no_fetch_is_hedged_while_the_breaker_is_not_closed(make_scheduler: MakeScheduler) -> None:
    backend = hedging_grid()
    async with make_scheduler([backend]) as scheduler:
        await scheduler.submit(specs(30, "grid"))
        await settle(scheduler)
        lane = scheduler.lanes["grid"]
        assert lane._hedge_after() is not None  # enough latencies: a healthy lane hedges
        for _ in range(lane.breaker.threshold):
            lane.breaker.record_failure("service unreachable", trial=False)
        assert lane.breaker.state == "open"
        # A service coming back is slow because it is loaded: a second request would add load.
        assert lane._hedge_after() is None
        lane.breaker.record_success(trial=True)  # the half-open trial
        assert lane._hedge_after() is not None


async def test_an_exit_pushed_before_tracking_is_held_not_rejected(make_scheduler: MakeScheduler) -> None:
    backend = ScriptedBackend("local", timeline=(JobStatus.RUNNING,))
    backend.push_on_submit = JobStatus.COMPLETED
    async with make_scheduler([backend]) as scheduler:
        jobs = await scheduler.submit(specs(5, "local"))
        await settle(scheduler)
    assert all(job.status == JobStatus.COMPLETED for job in jobs)
    assert scheduler.counters["rejections"] == 0


async def test_news_for_a_job_never_tracked_is_rejected_after_the_hold(make_scheduler: MakeScheduler) -> None:
    from monitor_core.backends import StatusReport

    backend = ScriptedBackend("grid")
    config = replace(FAST, held_push_for=0.1)
    async with make_scheduler([backend], config=config) as scheduler:
        scheduler.lanes["grid"].on_push(StatusReport("ghost", JobStatus.COMPLETED))
        await until(lambda: scheduler.counters["rejections.unknown_job"] == 1, within=5)


async def test_next_poll_times_are_published_and_match_the_snapshot(make_scheduler: MakeScheduler) -> None:
    caps = Capabilities(max_batch=10, max_concurrency=1, poll_interval=0.4)
    backend = ScriptedBackend("grid", caps=caps, timeline=(JobStatus.SUBMITTED,))
    async with make_scheduler([backend], config=SchedulerConfig(sample_every=0.05)) as scheduler:
        recorder = Recorder(scheduler.bus.subscribe())
        jobs = await scheduler.submit(specs(4, "grid"))
        await until(lambda: any(True for _ in recorder.of(Rescheduled)), within=5)
        snapshot = scheduler.snapshot()
        recorder.stop()
    announced: dict[str, float] = {}
    for event in recorder.of(Rescheduled):
        for job_id in event.job_ids:  # type: ignore[union-attr]
            announced[job_id] = event.next_poll_at  # type: ignore[union-attr]
    first = next(recorder.of(Rescheduled))
    # A fresh submission is polled twice as often as the base interval: the adaptive one is published.
    assert first.next_poll_at - first.at == pytest.approx(0.2, abs=0.05)  # type: ignore[union-attr]
    by_id = {record.job_id: record for record in snapshot.jobs}
    for job in jobs:
        if by_id[job.job_id].next_poll_at is not None and job.job_id in announced:
            assert by_id[job.job_id].next_poll_at == pytest.approx(announced[job.job_id])


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, so a full disk is real (needs root to mount)."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mountpoint)], capture_output=True, check=False
    )
    if result.returncode != 0:
        message = f"cannot mount a tmpfs: {result.stderr.decode().strip()}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


async def test_a_full_disk_pauses_collection_flags_it_and_loses_nothing(tiny_disk: Path) -> None:
    ballast = tiny_disk / "ballast"
    with contextlib.suppress(OSError), ballast.open("wb") as stream:
        stream.write(b"x" * 1024 * 1024)  # fill the disk
    backend = ScriptedBackend("grid")
    config = replace(FAST, local_fault_backoff=0.05, fetch_backoff_cap=0.2)
    bus = EventBus()
    async with Scheduler([backend], bus=bus, outputs=OutputSink(tiny_disk / "outputs"), config=config) as scheduler:
        recorder = Recorder(scheduler.bus.subscribe())
        jobs = await scheduler.submit(specs(4, "grid"))
        await until(lambda: any(True for _ in recorder.of(LocalFault)), within=10)
        assert all(job.status == JobStatus.COMPLETING for job in jobs)
        ballast.unlink()  # room again
        await settle(scheduler)
        await asyncio.sleep(0)
        recorder.stop()
    faults = list(recorder.of(LocalFault))
    assert "No space left" in faults[0].error  # type: ignore[union-attr]
    assert faults[-1].cleared  # type: ignore[union-attr]
    assert all(job.status == JobStatus.COMPLETED for job in jobs)
    assert scheduler.counters["outputs_collected"] == 4
    assert all(job.collect_error is None for job in jobs)


async def test_kill_counts_against_the_allowance_and_the_job_ends_killed(make_scheduler: MakeScheduler) -> None:
    caps = Capabilities(max_batch=10, max_concurrency=1, poll_interval=0.05, max_calls_per_minute=1000)
    backend = ScriptedBackend("grid", caps=caps, timeline=(JobStatus.RUNNING,))
    async with make_scheduler([backend]) as scheduler:
        (job,) = await scheduler.submit(specs(1, "grid"))
        lane = scheduler.lanes["grid"]
        await until(lambda: job.status == JobStatus.RUNNING, within=5)
        used = lane.allowance.used(time.monotonic())
        await scheduler.kill(job.job_id)
        assert lane.allowance.used(time.monotonic()) >= used + 1
        await until(lambda: job.status == JobStatus.KILLED, within=5)
        with pytest.raises(ValueError, match="only submitted or running"):
            await scheduler.kill(job.job_id)
    assert backend.log.kills == [job.backend_id]
