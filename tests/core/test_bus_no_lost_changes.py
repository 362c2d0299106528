"""No subscription of the bus ever misses a job change: it gets each, in order, or is closed."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from monitor_core import (
    EventBus,
    Heartbeat,
    JobChanged,
    JobRecord,
    JobStatus,
    OpKind,
    OpQueued,
    OpRecord,
    OpState,
    Snapshot,
    Subscription,
)


def change(serial: int) -> JobChanged:
    return JobChanged(
        at=float(serial),
        job_id=str(serial),
        backend="b",
        old=JobStatus.RUNNING,
        new=JobStatus.COMPLETING,
        source="poll",
    )


def test_a_subscriber_closed_for_overflow_does_not_rob_the_next_one() -> None:
    bus = EventBus(lambda: Snapshot(at=0.0, session="s"))
    overflowing = bus.subscribe(max_pending=1, hard_limit=1, name="overflowing")
    healthy = bus.subscribe(name="healthy")
    for serial in range(3):
        bus.publish(change(serial))
    assert overflowing.closed
    received = []
    while (event := healthy.receive_nowait()) is not None:
        if isinstance(event, JobChanged):
            received.append(event.job_id)
    assert received == ["0", "1", "2"]


class _Reader:
    """What one subscription has seen so far, and what it must still see."""

    def __init__(self, subscription: Subscription, start: int) -> None:
        self.subscription = subscription
        self.next_expected = start
        self.closed_reason: str | None = None


class BusMachine(RuleBasedStateMachine):
    """Many subscriptions, some slow or tiny; publishes of every kind in any order."""

    readers = Bundle("readers")

    def __init__(self) -> None:
        super().__init__()
        self.published: list[int] = []
        self.bus = EventBus(self._snapshot)
        self.op_serial = 0
        self.all_readers: list[_Reader] = []

    def _snapshot(self) -> Snapshot:
        # The snapshot is the present: every job changed so far, by serial.
        return Snapshot(
            at=0.0,
            session="s",
            jobs=tuple(JobRecord(job_id=str(s), backend="b", status=JobStatus.COMPLETING) for s in self.published),
        )

    @rule(target=readers, hard_limit=st.integers(1, 40), max_pending=st.integers(1, 20))
    def subscribe(self, hard_limit: int, max_pending: int) -> _Reader:
        subscription = self.bus.subscribe(max_pending=max_pending, hard_limit=hard_limit)
        reader = _Reader(subscription, start=len(self.published))
        self.all_readers.append(reader)
        return reader

    @rule()
    def publish_change(self) -> None:
        serial = len(self.published)
        self.published.append(serial)
        self.bus.publish(change(serial))

    @rule(count=st.integers(1, 30))
    def publish_burst(self, count: int) -> None:
        for _ in range(count):
            self.publish_change()

    @rule()
    def publish_rebuildable(self) -> None:
        self.op_serial += 1
        record = OpRecord(
            op_id=self.op_serial, kind=OpKind.POLL, backend="b", job_ids=("1",), state=OpState.QUEUED, enqueued_at=1.0
        )
        self.bus.publish(OpQueued(at=1.0, op=record))
        self.bus.publish(Heartbeat(at=1.0, seq=self.op_serial, jobs_total=0, jobs_active=0, jobs_final=0))

    @rule(reader=readers, most=st.integers(0, 50))
    def read(self, reader: _Reader, most: int) -> None:
        for _ in range(most):
            event = reader.subscription.receive_nowait()
            if event is None:
                break
            self._check(reader, event)

    @rule(reader=consumes(readers))
    def unsubscribe(self, reader: _Reader) -> None:
        reader.subscription.close()

    def _check(self, reader: _Reader, event: object) -> None:
        if isinstance(event, JobChanged):
            assert int(event.job_id) == reader.next_expected, (
                f"{reader.subscription.name} expected change {reader.next_expected}, got {event.job_id}"
            )
            reader.next_expected += 1
        elif isinstance(event, Snapshot):
            # A snapshot (the first event, or a resync) comes exactly after the changes it
            # holds: none missed before it, none repeated after it.
            assert len(event.jobs) == reader.next_expected

    @invariant()
    def the_bus_counts_only_open_subscriptions(self) -> None:
        open_readers = sum(1 for reader in self.all_readers if not reader.subscription.closed)
        assert self.bus.statistics().subscribers == open_readers

    def teardown(self) -> None:
        # Drain every subscription: an open one got everything; a closed one says why and
        # a fresh subscription carries on from a snapshot with everything so far.
        for reader in self.all_readers:
            while (event := reader.subscription.receive_nowait()) is not None:
                self._check(reader, event)
            if reader.subscription.closed and reader.subscription.closed_reason != "closed by subscriber":
                assert reader.subscription.closed_reason
                resumed = self.bus.subscribe()
                first = resumed.receive_nowait()
                assert isinstance(first, Snapshot)
                assert len(first.jobs) == len(self.published)
            elif not reader.subscription.closed:
                assert reader.next_expected == len(self.published), (
                    f"open subscription saw {reader.next_expected} of {len(self.published)} changes"
                )


BusMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestBusNeverLosesAChange = BusMachine.TestCase
