"""The bus: snapshot first, then deltas; slow subscribers never slow the publisher."""

from __future__ import annotations

import asyncio

import pytest

from monitor_core import (
    BackendRecord,
    EventBus,
    Heartbeat,
    JobChanged,
    JobRecord,
    JobStatus,
    LagSampled,
    OpKind,
    OpQueued,
    OpRecord,
    OpState,
    Snapshot,
)


def snapshot(jobs: int = 0) -> Snapshot:
    return Snapshot(
        at=1.0,
        session="s",
        jobs=tuple(JobRecord(job_id=str(i), backend="b", status=JobStatus.RUNNING) for i in range(jobs)),
    )


def change(job_id: int) -> JobChanged:
    return JobChanged(
        at=2.0, job_id=str(job_id), backend="b", old=JobStatus.RUNNING, new=JobStatus.COMPLETING, source="poll"
    )


def queued(op_id: int) -> OpQueued:
    record = OpRecord(op_id=op_id, kind=OpKind.POLL, backend="b", job_ids=("1",), state=OpState.QUEUED, enqueued_at=1.0)
    return OpQueued(at=2.0, op=record)


def lag(backend: str, value: float) -> LagSampled:
    return LagSampled(at=3.0, backend=BackendRecord(name=backend, lag=value))


async def test_a_subscriber_gets_a_snapshot_then_deltas_in_order() -> None:
    bus = EventBus(lambda: snapshot(3))
    subscription = bus.subscribe()
    bus.publish(change(1))
    bus.publish(change(2))
    first = await subscription.receive()
    assert isinstance(first, Snapshot)
    assert len(first.jobs) == 3
    assert await subscription.receive() == change(1)
    assert await subscription.receive() == change(2)
    assert subscription.receive_nowait() is None


async def test_a_late_subscriber_sees_the_present_not_the_past() -> None:
    state = {"jobs": 1}
    bus = EventBus(lambda: snapshot(state["jobs"]))
    bus.publish(change(1))
    state["jobs"] = 5
    late = bus.subscribe()
    first = await late.receive()
    assert isinstance(first, Snapshot)
    assert len(first.jobs) == 5
    assert late.receive_nowait() is None


async def test_slow_subscriber_keeps_every_job_change_and_resyncs_the_rest() -> None:
    bus = EventBus(lambda: snapshot(0))
    slow = bus.subscribe(max_pending=100)
    await slow.receive()
    for i in range(1000):
        bus.publish(queued(i))
        bus.publish(change(i))
        bus.publish(lag("b", float(i)))
        bus.publish(Heartbeat(at=1.0, seq=i, jobs_total=i, jobs_active=0, jobs_final=0))
    received = []
    while (event := slow.receive_nowait()) is not None:
        received.append(event)
    changes = [e for e in received if isinstance(e, JobChanged)]
    assert [c.job_id for c in changes] == [str(i) for i in range(1000)]
    stats = slow.statistics()
    assert stats.dropped > 0
    assert stats.resyncs == 1
    assert sum(isinstance(e, Snapshot) for e in received) == 1
    # Lag samples and heartbeats coalesce to the latest.
    lags = [e for e in received if isinstance(e, LagSampled)]
    assert len(lags) == 1
    assert lags[0].backend.lag == 999.0
    assert [e.seq for e in received if isinstance(e, Heartbeat)] == [999]


async def test_publisher_never_waits_and_a_fast_subscriber_loses_nothing() -> None:
    bus = EventBus(lambda: snapshot(0))
    fast = bus.subscribe()
    slow = bus.subscribe(max_pending=10)
    got: list[object] = []

    async def read() -> None:
        async for event in fast:
            got.append(event)

    reader = asyncio.create_task(read())
    for i in range(500):
        bus.publish(queued(i))
        if i % 50 == 0:
            await asyncio.sleep(0)
    fast.close()
    await reader
    assert sum(isinstance(e, OpQueued) for e in got) == 500
    assert slow.statistics().dropped > 0


async def test_a_subscriber_that_piles_up_job_changes_is_closed_with_a_reason() -> None:
    bus = EventBus(lambda: snapshot(0))
    stuck = bus.subscribe(hard_limit=50)
    for i in range(60):
        bus.publish(change(i))
    assert stuck.closed
    assert stuck.closed_reason is not None
    assert stuck.closed_reason.startswith("overflow")
    assert bus.statistics().overflow_closes == 1
    # What it holds is still delivered, then iteration ends.
    drained = [event async for event in stuck]
    assert isinstance(drained[0], Snapshot)
    assert len(drained) == 51


async def test_close_ends_iteration_and_wakes_a_waiting_reader() -> None:
    bus = EventBus(lambda: snapshot(0))
    subscription = bus.subscribe()
    await subscription.receive()
    waiter = asyncio.create_task(subscription.receive())
    await asyncio.sleep(0)
    subscription.close()
    with pytest.raises(Exception, match="closed by subscriber"):
        await waiter
    assert bus.statistics().subscribers == 0


async def test_publish_threadsafe_needs_a_bound_loop() -> None:
    bus = EventBus()
    with pytest.raises(RuntimeError):
        bus.publish_threadsafe(change(1))
    bus.bind_loop(asyncio.get_running_loop())
    subscription = bus.subscribe()
    await subscription.receive()
    await asyncio.to_thread(bus.publish_threadsafe, change(7))
    assert await asyncio.wait_for(subscription.receive(), 2) == change(7)


async def test_a_batch_arrives_in_order_with_one_wake_up_and_the_hard_limit_still_holds() -> None:
    bus = EventBus(lambda: snapshot())
    everything = bus.subscribe()
    small = bus.subscribe(hard_limit=5)
    waiting = asyncio.create_task(everything.receive())
    await asyncio.sleep(0)
    assert isinstance(waiting.result(), Snapshot)
    waiting = asyncio.create_task(everything.receive())
    await asyncio.sleep(0)
    bus.publish_many([change(n) for n in range(10)])
    assert await waiting == change(0)
    assert [everything.receive_nowait() for _ in range(9)] == [change(n) for n in range(1, 10)]
    # Over its hard limit, a subscription closes (for a resubscription), as with single events.
    assert small.closed
    assert bus.statistics().published == 10


async def test_a_batch_with_coalescing_events_is_published_one_by_one() -> None:
    bus = EventBus(lambda: snapshot())
    subscription = bus.subscribe()
    assert isinstance(subscription.receive_nowait(), Snapshot)
    bus.publish_many([lag("b", 1.0), change(1), lag("b", 2.0)])
    # The lag samples still coalesce into one slot, holding the latest.
    assert subscription.receive_nowait() == lag("b", 2.0)
    assert subscription.receive_nowait() == change(1)
    assert subscription.receive_nowait() is None


async def test_a_subscriber_of_some_kinds_gets_those_and_snapshots_only() -> None:
    bus = EventBus(lambda: snapshot(2))
    subscription = bus.subscribe(kinds=(JobChanged,))
    bus.publish(queued(1))
    bus.publish(change(1))
    bus.publish_many([queued(2), change(2), lag("b", 1.0)])
    bus.publish_many([queued(3)])
    received = [subscription.receive_nowait() for _ in range(4)]
    assert isinstance(received[0], Snapshot)
    assert received[1:] == [change(1), change(2), None]


async def test_a_selection_made_later_drops_what_is_buffered_of_other_kinds_and_keeps_the_snapshot() -> None:
    bus = EventBus(lambda: snapshot(2))
    subscription = bus.subscribe()
    heartbeat = Heartbeat(at=3.0, seq=1, jobs_total=2, jobs_active=2, jobs_final=0)
    bus.publish_many([queued(1), change(1), lag("b", 1.0), heartbeat])
    subscription.select((Heartbeat, JobChanged))
    bus.publish_many([queued(2), lag("b", 2.0), change(2)])
    received = [subscription.receive_nowait() for _ in range(5)]
    assert isinstance(received[0], Snapshot)
    assert received[1:] == [change(1), heartbeat, change(2), None]
    assert subscription.statistics().pending == 0
