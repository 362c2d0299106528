"""The one fold of the event stream: every event of the contract, counts that never drift, a snapshot round trip."""

from __future__ import annotations

import random
import typing
from collections import Counter

from monitor_core import (
    BackendRecord,
    BreakerChanged,
    CommandAcked,
    Event,
    Heartbeat,
    JobAdded,
    JobChanged,
    JobRecord,
    JobStatus,
    LagSampled,
    LocalFault,
    OpFinished,
    OpKind,
    OpQueued,
    OpRecord,
    OpStarted,
    OpState,
    Rescheduled,
    SessionEnded,
    Snapshot,
    StateFold,
    UpdateRejected,
    is_legal_transition,
    percentile,
)

S = JobStatus


def job(job_id: str, status: JobStatus = S.SUBMITTED, *, backend: str = "grid", group: str = "g1") -> JobRecord:
    return JobRecord(job_id=job_id, backend=backend, status=status, group=group, status_since=1.0, last_confirmed=1.0)


def change(job_id: str, old: JobStatus, new: JobStatus, at: float, **more: typing.Any) -> JobChanged:
    return JobChanged(at=at, job_id=job_id, backend="grid", old=old, new=new, source="poll", **more)


def one_of_each(at: float) -> list[Event]:
    record = BackendRecord(name="grid", lag=1.5, results_lag=4.0, fetches_queued=3, collect_bound=2.0)
    op = OpRecord(op_id=9, kind=OpKind.POLL, backend="grid", job_ids=("1",), state=OpState.QUEUED, enqueued_at=at)
    return [
        Snapshot(at=at, session="s", jobs=(job("1"),), backends=(record,)),
        JobAdded(at=at, job=job("2")),
        change("1", S.SUBMITTED, S.RUNNING, at),
        OpQueued(at=at, op=op),
        OpStarted(at=at, op_id=9, backend="grid", attempt=1),
        OpFinished(at=at, op_id=9, backend="grid", kind=OpKind.POLL, outcome="done"),
        UpdateRejected(at=at, backend="grid", job_id="1", category="garbage", reason="?"),
        LagSampled(at=at, backend=record),
        BreakerChanged(at=at, backend="grid", state="open"),
        Heartbeat(at=at, seq=1, jobs_total=2, jobs_active=2, jobs_final=0),
        Rescheduled(at=at, backend="grid", next_poll_at=at + 30, job_ids=("1", "2")),
        LocalFault(at=at, backend=None, what="store flush", error="disk full"),
        CommandAcked(at=at, command_id="c1", ok=True),
        SessionEnded(at=at, reason="done"),
    ]


def test_every_event_of_the_contract_is_folded() -> None:
    events = one_of_each(10.0)
    kinds = {type(event) for event in events}
    assert kinds == set(typing.get_args(Event)), "a new event kind needs a case in the fold and here"
    fold = StateFold()
    fold.apply_many(events)
    assert fold.events == len(events)
    assert fold.jobs["1"].status == S.RUNNING
    assert fold.ops == {}
    assert fold.last_confirmed("1") == 10.0
    assert fold.counters["rejections"] == 1
    assert fold.backends["grid"].breaker == "open"
    assert fold.heartbeat is not None
    assert fold.next_poll_at("1") == 40.0
    assert fold.faults[(None, "store flush")].error == "disk full"
    assert fold.acks[-1].command_id == "c1"
    assert fold.ended == "done"
    assert list(fold.figures_of("grid").results_lag) == [4.0]


def test_counts_per_status_backend_and_group_never_drift_from_the_jobs() -> None:
    rng = random.Random(3)
    jobs = [job(str(i), backend=f"b{i % 3}", group=f"g{i % 5}") for i in range(200)]
    fold = StateFold()
    fold.apply(Snapshot(at=0.0, session="s", jobs=tuple(jobs)))
    for step in range(3000):
        job_id = str(rng.randrange(220))  # some ids the snapshot never had
        old = fold.jobs[job_id].status if job_id in fold.jobs else S.RUNNING
        new = rng.choice([status for status in S if is_legal_transition(old, status)] or [old])
        fold.apply(change(job_id, old, new, float(step)))
    assert fold.counts == Counter(record.status for record in fold.jobs.values()) + Counter()
    for name, counts in fold.by_backend.items():
        assert +counts == Counter(r.status for r in fold.jobs.values() if r.backend == name)
    for name, counts in fold.by_group.items():
        assert +counts == Counter(r.status for r in fold.jobs.values() if r.group == name)
    assert fold.final == sum(1 for r in fold.jobs.values() if r.status.is_final)


def test_the_published_next_poll_time_is_the_one_shown_and_goes_when_the_job_is_not_polled() -> None:
    fold = StateFold()
    fold.apply(Snapshot(at=0.0, session="s", jobs=(job("1", S.RUNNING), job("2", S.RUNNING))))
    fold.apply(Rescheduled(at=1.0, backend="grid", next_poll_at=61.0, job_ids=("1", "2", "unknown")))
    assert fold.next_poll_at("1") == fold.next_poll_at("2") == 61.0
    assert "unknown" not in fold.next_poll
    record = fold.record("1")
    assert record is not None
    assert record.next_poll_at == 61.0
    assert {r.job_id: r.next_poll_at for r in fold.snapshot().jobs} == {"1": 61.0, "2": 61.0}
    fold.apply(change("1", S.RUNNING, S.COMPLETING, 5.0))
    assert fold.next_poll_at("1") is None
    assert fold.jobs["1"].next_poll_at is None


def test_a_poll_confirms_its_jobs_and_a_retry_puts_the_operation_back_in_the_queue() -> None:
    fold = StateFold()
    fold.apply(Snapshot(at=0.0, session="s", jobs=(job("1", S.RUNNING),)))
    op = OpRecord(op_id=1, kind=OpKind.POLL, backend="grid", job_ids=("1",), state=OpState.QUEUED, enqueued_at=0.0)
    fold.apply(OpQueued(at=1.0, op=op))
    fold.apply(OpStarted(at=2.0, op_id=1, backend="grid", attempt=1))
    assert fold.ops[1].state == OpState.IN_FLIGHT
    fold.apply(OpFinished(at=3.0, op_id=1, backend="grid", kind=OpKind.POLL, outcome="error", retry_in=1.0))
    assert fold.ops[1].state == OpState.QUEUED
    assert fold.last_confirmed("1") == 1.0
    fold.apply(OpFinished(at=4.0, op_id=1, backend="grid", kind=OpKind.POLL, outcome="done"))
    assert 1 not in fold.ops
    assert fold.last_confirmed("1") == 4.0
    assert fold.snapshot().jobs[0].last_confirmed == 4.0


def test_collect_error_is_set_on_a_failed_collection_and_cleared_when_collected_later() -> None:
    fold = StateFold()
    fold.apply(Snapshot(at=0.0, session="s", jobs=(job("1", S.RUNNING),)))
    fold.apply(change("1", S.RUNNING, S.COMPLETING, 10.0))
    fold.apply(change("1", S.COMPLETING, S.FAILED, 25.0, collect_error="timed out 5 times"))
    assert fold.jobs["1"].collect_error == "timed out 5 times"
    assert list(fold.figures_of("grid").end_to_collected) == [15.0]
    fold.apply(JobChanged(at=40.0, job_id="1", backend="grid", old=S.FAILED, new=S.COMPLETED, source="user"))
    assert fold.jobs["1"].collect_error is None
    assert fold.jobs["1"].status == S.COMPLETED


def test_end_to_collected_counts_from_the_move_to_completing_even_across_a_resync() -> None:
    fold = StateFold()
    completing = JobRecord(job_id="1", backend="grid", status=S.COMPLETING, status_since=100.0)
    fold.apply(Snapshot(at=110.0, session="s", jobs=(completing,)))
    fold.apply(change("1", S.COMPLETING, S.COMPLETED, 130.0))
    assert list(fold.figures_of("grid").end_to_collected) == [30.0]
    assert fold.collected == 1


def test_a_local_fault_stays_until_cleared_and_the_lag_history_outlives_a_snapshot() -> None:
    fold = StateFold()
    fold.apply(LocalFault(at=1.0, backend="grid", what="commit output", error="EIO"))
    fold.apply(LagSampled(at=1.0, backend=BackendRecord(name="grid", lag=2.0)))
    fold.apply(Snapshot(at=2.0, session="s"))
    assert (("grid", "commit output")) in fold.faults
    fold.apply(LocalFault(at=3.0, backend="grid", what="commit output", error="", cleared=True))
    assert not fold.faults
    assert list(fold.figures_of("grid").status_lag) == [2.0]
    assert fold.snapshots == 1


def test_a_snapshot_of_the_fold_rebuilds_the_same_state() -> None:
    fold = StateFold()
    fold.apply_many(one_of_each(10.0)[:-1])
    again = StateFold()
    again.apply(fold.snapshot())
    assert again.final_states() == fold.final_states()
    assert again.counts == fold.counts
    assert again.backends == fold.backends
    assert again.next_poll_at("1") == fold.next_poll_at("1")


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.99) == 0.0
    assert percentile([5.0], 0.5) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(list(reversed(values)), 1.0) == 100.0


def test_end_to_collected_keeps_about_the_latest_hundred_thousand() -> None:
    figures = StateFold().figures_of("grid")
    for n in range(111_000):
        figures.collected(float(n))
    kept = figures.end_to_collected
    assert 100_000 <= len(kept) <= 110_000
    assert kept[-1] == 110_999.0
    assert kept[0] == 111_000.0 - len(kept)
