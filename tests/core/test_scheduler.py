"""Scheduler behaviour: batching, limits, priority, isolation of a hung backend, breaker."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest

from monitor_core import (
    AdaptiveInterval,
    BreakerChanged,
    Event,
    Job,
    JobAdded,
    JobChanged,
    JobStatus,
    OpFinished,
    OpKind,
    OpStarted,
    Scheduler,
    SchedulerConfig,
    Subscription,
    UpdateRejected,
)
from monitor_core.backends import Capabilities

from ..conftest import until
from .conftest import FAST, MakeScheduler
from .fakes import ScriptedBackend, specs

pytestmark = pytest.mark.timeout(60)


class Recorder:
    """Collects every event of a subscription in the background."""

    def __init__(self, subscription: Subscription) -> None:
        self.events: list[Event] = []
        self._task = asyncio.create_task(self._run(subscription))

    async def _run(self, subscription: Subscription) -> None:
        async for event in subscription:
            self.events.append(event)

    def of(self, kind: type[Event]) -> Iterator[Event]:
        return (e for e in self.events if isinstance(e, kind))

    def stop(self) -> None:
        self._task.cancel()


async def settle(scheduler: Scheduler, within: float = 20) -> None:
    async with asyncio.timeout(within):
        await scheduler.wait_all_final()


async def test_polls_are_batched_to_the_bulk_limit(make_scheduler: MakeScheduler) -> None:
    backend = ScriptedBackend("grid", caps=Capabilities(max_batch=7, max_concurrency=2, poll_interval=0.05))
    async with make_scheduler([backend]) as scheduler:
        await scheduler.submit(specs(50, "grid"))
        await settle(scheduler)
    assert backend.log.batches, "the backend was never polled"
    assert max(len(batch) for batch in backend.log.batches) <= 7
    # Batching packs jobs: far fewer calls than jobs x polls each.
    polls_needed = 50 * 2
    assert len(backend.log.batches) < polls_needed / 3


async def test_concurrency_limit_holds(make_scheduler: MakeScheduler) -> None:
    backend = ScriptedBackend(
        "grid", caps=Capabilities(max_batch=2, max_concurrency=3, fetch_concurrency=1, poll_interval=0.01), delay=0.02
    )
    async with make_scheduler([backend]) as scheduler:
        await scheduler.submit(specs(40, "grid"))
        await settle(scheduler)
    # Polls keep their limit; fetches have an adaptive limit of their own, never taking a poll's slot.
    assert 2 <= backend.log.peak_polls_in_flight <= 3
    fetch_limit = scheduler.lanes["grid"].fetch_limit
    assert backend.log.peak_in_flight <= 3 + fetch_limit.maximum


async def test_each_job_walks_legal_transitions_to_completed_with_output(make_scheduler: MakeScheduler) -> None:
    backend = ScriptedBackend("grid")
    async with make_scheduler([backend]) as scheduler:
        recorder = Recorder(scheduler.bus.subscribe())
        jobs = await scheduler.submit(specs(12, "grid"))
        await settle(scheduler)
        await asyncio.sleep(0)
        recorder.stop()
    assert {job.status for job in jobs} == {JobStatus.COMPLETED}
    for job in jobs:
        path = [(e.old, e.new) for e in recorder.of(JobChanged) if e.job_id == job.job_id]  # type: ignore[union-attr]
        assert path == [
            (JobStatus.SUBMITTED, JobStatus.RUNNING),
            (JobStatus.RUNNING, JobStatus.COMPLETING),
            (JobStatus.COMPLETING, JobStatus.COMPLETED),
        ]
        assert (scheduler.outputs.path(job.job_id) / "stdout").read_text().startswith("output of")
    assert sorted(backend.log.fetches) == sorted(job.backend_id for job in jobs)


async def test_refresh_now_jumps_the_queue(make_scheduler: MakeScheduler) -> None:
    caps = Capabilities(max_batch=1, max_concurrency=1, poll_interval=0.01)
    backend = ScriptedBackend("grid", caps=caps, timeline=(JobStatus.RUNNING,), delay=0.05)
    async with make_scheduler([backend]) as scheduler:
        jobs = await scheduler.submit(specs(30, "grid"))
        await backend.calls_started.wait()
        await asyncio.sleep(0.1)  # let a backlog of single-job polls build up
        queued_before = [op for op in scheduler.lanes["grid"].ops.values() if op.state == "queued"]
        assert len(queued_before) > 5, "the test needs a backlog to jump"
        target = next(j for j in reversed(jobs) if not any(j.job_id in op.job_ids for op in queued_before[:3]))
        calls_before = len(backend.log.batches)
        scheduler.refresh_now(target.job_id)
        await until(lambda: len(backend.log.batches) >= calls_before + 2, within=5)
    # The refreshed job is polled by the next call after the one in flight, ahead of the backlog.
    assert (target.backend_id,) in backend.log.batches[calls_before : calls_before + 2]


async def test_refresh_of_an_unknown_or_final_job_is_refused(make_scheduler: MakeScheduler) -> None:
    backend = ScriptedBackend("grid")
    async with make_scheduler([backend]) as scheduler:
        (job,) = await scheduler.submit(specs(1, "grid"))
        with pytest.raises(KeyError):
            scheduler.refresh_now("no-such-job")
        await settle(scheduler)
        with pytest.raises(ValueError, match="only submitted or running"):
            scheduler.refresh_now(job.job_id)


async def test_hung_backend_does_not_delay_another(make_scheduler: MakeScheduler) -> None:
    hung = ScriptedBackend(
        "hung", caps=Capabilities(max_batch=5, max_concurrency=2, poll_interval=0.05, call_timeout=30)
    )
    healthy = ScriptedBackend("healthy")
    hung.mode = "hang"
    async with make_scheduler([hung, healthy]) as scheduler:
        stuck = await scheduler.submit(specs(10, "hung"))
        fine = await scheduler.submit(specs(20, "healthy"))
        await until(lambda: all(job.status.is_final for job in fine), within=20)
        assert all(job.status == JobStatus.SUBMITTED for job in stuck)
        assert scheduler.lanes["hung"].in_flight == 2
        assert healthy.log.fetches, "the healthy backend's outputs were fetched meanwhile"


async def test_timeout_is_an_outcome_and_the_call_is_retried(make_scheduler: MakeScheduler) -> None:
    caps = Capabilities(max_batch=5, max_concurrency=1, poll_interval=0.05, call_timeout=0.1)
    backend = ScriptedBackend("grid", caps=caps)
    backend.mode = "hang"
    async with make_scheduler([backend]) as scheduler:
        recorder = Recorder(scheduler.bus.subscribe())
        await scheduler.submit(specs(3, "grid"))
        await until(lambda: any(e.outcome == "timeout" for e in recorder.of(OpFinished)))  # type: ignore[union-attr]
        backend.mode = "ok"
        await settle(scheduler)
        recorder.stop()
    timeouts = [e for e in recorder.of(OpFinished) if e.outcome == "timeout"]  # type: ignore[union-attr]
    assert timeouts[0].retry_in is not None
    assert any(e.attempt > 1 for e in recorder.of(OpStarted))  # type: ignore[union-attr]


async def test_breaker_opens_on_failures_and_closes_after_recovery(make_scheduler: MakeScheduler) -> None:
    backend = ScriptedBackend("grid")
    backend.mode = "fail"
    async with make_scheduler([backend]) as scheduler:
        recorder = Recorder(scheduler.bus.subscribe())
        jobs = await scheduler.submit(specs(5, "grid"))
        await until(lambda: scheduler.lanes["grid"].breaker.state == "open", within=10)
        calls_when_open = len(backend.log.batches)
        await asyncio.sleep(0.05)
        # While open (reset 0.2 s), no call is made.
        assert len(backend.log.batches) == calls_when_open
        backend.mode = "ok"
        await settle(scheduler)
        recorder.stop()
    states = [e.state for e in recorder.of(BreakerChanged)]  # type: ignore[union-attr]
    assert states[0] == "open"
    assert "half_open" in states
    assert states[-1] == "closed"
    assert all(job.status == JobStatus.COMPLETED for job in jobs)


async def test_a_round_of_failed_calls_does_not_open_the_breaker_of_a_service_that_still_answers(
    make_scheduler: MakeScheduler,
) -> None:
    # Eight calls in flight fail together at each bad moment of the service, then eight succeed:
    # a service that answers every other round must keep being asked.
    backend = ScriptedBackend("grid", caps=Capabilities(max_batch=2, max_concurrency=8, poll_interval=0.05), delay=0.01)
    backend.failing_rounds = 8
    async with make_scheduler([backend]) as scheduler:
        recorder = Recorder(scheduler.bus.subscribe())
        jobs = await scheduler.submit(specs(40, "grid"))
        await settle(scheduler)
        recorder.stop()
    failed = [e for e in recorder.of(OpFinished) if e.outcome != "done"]  # type: ignore[union-attr]
    assert len(failed) >= 8, "the service's bad moments were met"
    assert not list(recorder.of(BreakerChanged))
    assert all(job.status == JobStatus.COMPLETED for job in jobs)


async def test_two_backends_activated_in_the_same_instant_are_both_polled(make_scheduler: MakeScheduler) -> None:
    first, second = ScriptedBackend("first"), ScriptedBackend("second")
    async with make_scheduler([first, second]) as scheduler:
        await asyncio.gather(scheduler.submit(specs(3, "first")), scheduler.submit(specs(3, "second")))
        await settle(scheduler)
    assert first.log.batches
    assert second.log.batches


async def test_illegal_transition_is_rejected_counted_and_state_kept(make_scheduler: MakeScheduler) -> None:
    # completed -> running is not in Ganga's state graph.
    backend = ScriptedBackend("grid", timeline=(JobStatus.RUNNING, JobStatus.NEW, JobStatus.COMPLETED))
    async with make_scheduler([backend]) as scheduler:
        recorder = Recorder(scheduler.bus.subscribe())
        jobs = await scheduler.submit(specs(4, "grid"))
        await settle(scheduler)
        await asyncio.sleep(0)
        recorder.stop()
    rejected = [e for e in recorder.of(UpdateRejected) if e.category == "illegal_transition"]  # type: ignore[union-attr]
    assert len(rejected) == 4
    assert scheduler.counters["rejections.illegal_transition"] == 4
    assert all(job.status == JobStatus.COMPLETED for job in jobs)
    assert not any(e.new == JobStatus.NEW for e in recorder.of(JobChanged))  # type: ignore[union-attr]


async def test_pause_stops_calls_and_resume_restarts_them(make_scheduler: MakeScheduler) -> None:
    backend = ScriptedBackend("grid", timeline=(JobStatus.RUNNING,))
    async with make_scheduler([backend]) as scheduler:
        await scheduler.submit(specs(3, "grid"))
        await backend.calls_started.wait()
        scheduler.pause("grid")
        await asyncio.sleep(0.05)
        paused_calls = len(backend.log.batches)
        await asyncio.sleep(0.3)
        assert len(backend.log.batches) <= paused_calls + 1  # at most the call already in flight
        assert scheduler.lanes["grid"].record(0).paused
        scheduler.resume("grid")
        await until(lambda: len(backend.log.batches) > paused_calls + 2, within=5)


async def test_set_interval_validates_and_applies(make_scheduler: MakeScheduler) -> None:
    backend = ScriptedBackend("grid", timeline=(JobStatus.RUNNING,))
    async with make_scheduler([backend]) as scheduler:
        await scheduler.submit(specs(2, "grid"))
        with pytest.raises(ValueError, match="positive"):
            scheduler.set_interval("grid", 0)
        with pytest.raises(KeyError):
            scheduler.set_interval("nowhere", 1)
        scheduler.set_interval("grid", 60)
        assert scheduler.lanes["grid"].base_interval == 60


async def test_shutdown_drains_in_flight_calls_within_the_deadline(make_scheduler: MakeScheduler) -> None:
    backend = ScriptedBackend("grid", timeline=(JobStatus.RUNNING,))
    backend.mode = "hang"
    config = SchedulerConfig(drain_timeout=0.2, sample_every=0.05)
    async with make_scheduler([backend], config=config) as scheduler:
        recorder = Recorder(scheduler.bus.subscribe())
        await scheduler.submit(specs(3, "grid"))
        await backend.calls_started.wait()
    await asyncio.sleep(0)
    recorder.stop()
    outcomes = [e.outcome for e in recorder.of(OpFinished)]  # type: ignore[union-attr]
    assert "cancelled" in outcomes
    assert recorder.events[-1].__class__.__name__ == "SessionEnded"


async def test_fetch_failures_are_retried_until_the_output_arrives(make_scheduler: MakeScheduler) -> None:
    backend = ScriptedBackend("grid")
    async with make_scheduler([backend], config=FAST) as scheduler:
        recorder = Recorder(scheduler.bus.subscribe())
        backend.fetch_mode = "fail"
        (job,) = await scheduler.submit(specs(1, "grid"))
        await until(
            lambda: any(e.kind == OpKind.FETCH_OUTPUT and e.outcome == "error" for e in recorder.of(OpFinished))  # type: ignore[union-attr]
        )
        assert job.status == JobStatus.COMPLETING
        backend.fetch_mode = "ok"
        await settle(scheduler)
        recorder.stop()
    assert job.status == JobStatus.COMPLETED
    assert scheduler.counters["outputs_collected"] == 1


async def test_tracking_in_bulk_does_what_tracking_one_by_one_does(make_scheduler: MakeScheduler) -> None:
    def jobs(first: int, count: int) -> list[Job]:
        return [
            Job(job_id=str(n), backend="grid", backend_id=f"b{n}", status=JobStatus.SUBMITTED, status_since=1.0)
            for n in range(first, first + count)
        ]

    backend = ScriptedBackend("grid", caps=Capabilities(max_batch=1000, max_concurrency=1, poll_interval=3600.0))
    async with make_scheduler([backend]) as scheduler:
        recorder = Recorder(scheduler.bus.subscribe())
        for job in jobs(1, 3):
            scheduler.track(job)
        bulk = jobs(4, 2000)
        scheduler.track_many(bulk[:1000])
        await scheduler.track_all(bulk[1000:])
        with pytest.raises(ValueError, match="already tracked"):
            scheduler.track_many(jobs(2004, 1) + jobs(1, 1))  # the second id is taken
        await asyncio.sleep(0)
        lane = scheduler.lane("grid")
        assert lane.active == {str(n) for n in range(1, 2005)}
        added = {e.job.job_id: e.job for e in recorder.of(JobAdded)}  # type: ignore[attr-defined]
        assert set(added) == lane.active
        # Every job has a due time, announced in its JobAdded, and the jobs due together share a
        # heap entry (one a chunk of the jobs tracked together).
        for job_id, record in added.items():
            due = lane.next_poll_at(job_id)
            assert due is not None
            assert record.next_poll_at == pytest.approx(scheduler.wall(due))
        assert len(lane._due) < 2004 / 50
        recorder.stop()


async def test_the_next_poll_of_a_job_is_due_an_interval_after_the_last_was_sent(
    make_scheduler: MakeScheduler,
) -> None:
    # Each answer takes 0.3 s and the interval is 0.5 s. An answer says how the job was when
    # the question was sent, so the next question goes one interval after that: a job ending
    # just after a poll is sent is seen within interval + one call. Counting the interval from
    # the answer would space the polls 0.8 s apart and leave it unseen for interval + two calls.
    backend = ScriptedBackend(
        "grid",
        caps=Capabilities(max_batch=10, max_concurrency=1, poll_interval=0.5, call_timeout=2),
        timeline=(JobStatus.RUNNING,) * 6 + (JobStatus.COMPLETED,),
        delay=0.3,
    )
    fixed = AdaptiveInterval(fast=1.0, slow=1.0)
    async with make_scheduler([backend], policy=fixed) as scheduler:
        recorder = Recorder(scheduler.bus.subscribe())
        await scheduler.submit(specs(1, "grid"))
        await settle(scheduler)
        recorder.stop()
    starts = [e.at for e in recorder.of(OpStarted) if isinstance(e, OpStarted)]
    assert len(starts) >= 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    # Between the interval (0.5 s) and the interval plus the call (0.8 s): a direction, with
    # room on both sides for a slow machine.
    assert sorted(gaps)[len(gaps) // 2] < 0.65, gaps
