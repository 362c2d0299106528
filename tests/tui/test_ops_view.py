"""The operation queue keeps waiting operations as their records: what it shows is the same as with a view each."""

from __future__ import annotations

from ganga_tui.job_rows import OpView
from ganga_tui.job_store import JobStore
from ganga_tui.views.ops import _OP_LOG, FADE_SECONDS, OpsView
from monitor_core import JobAdded, JobRecord, JobStatus, OpFinished, OpKind, OpQueued, OpRecord, OpStarted, OpState

NOW = 1_000.0


def fetch(op_id: int, job_id: str = "1", at: float = NOW) -> OpRecord:
    return OpRecord(
        op_id=op_id,
        kind=OpKind.FETCH_OUTPUT,
        backend="grid",
        job_ids=(job_id,),
        state=OpState.QUEUED,
        enqueued_at=at + op_id / 1000,
    )


def views_kept(ops: OpsView) -> int:
    return sum(isinstance(entry, OpView) for entry in ops._waiting.values())


def test_a_flood_of_waiting_operations_keeps_views_only_of_those_shown() -> None:
    ops = OpsView()
    for op_id in range(1, 1_001):
        ops.queued(fetch(op_id, str(op_id)))
    assert views_kept(ops) == 0
    shown = ops.shown(5)
    assert [view.op_id for view in shown] == [1, 2, 3, 4, 5]
    assert {view.state for view in shown} == {"queued"}
    assert views_kept(ops) == 5
    assert ops.shown(5) == shown
    assert ops.shown(5)[0] is shown[0], "a view once made is the one the queue keeps"
    assert len(ops.ops) == 1_000
    assert ops.live_states == {"queued": 1_000}
    assert 1_000 in ops.ops
    assert 1_001 not in ops.ops
    assert ops.ops.get(1_001) is None
    assert views_kept(ops) == 5, "asking whether an operation is queued makes no view"


def test_operations_move_through_their_states_whether_or_not_they_were_shown() -> None:
    ops = OpsView()
    for op_id in range(1, 11):
        ops.queued(fetch(op_id))
    generation = ops.generation
    assert ops.started(OpStarted(at=NOW + 1, op_id=7, backend="grid", attempt=1)) is not None
    assert ops.generation > generation
    assert ops.ops[7].state == "in_flight"
    assert ops.ops[7].started_at == NOW + 1
    assert ops.live_states == {"queued": 9, "in_flight": 1}
    ops.finished(
        OpFinished(
            at=NOW + 2, op_id=7, backend="grid", kind=OpKind.FETCH_OUTPUT, outcome="error", error="slow", retry_in=1.0
        )
    )
    assert ops.ops[7].state == "retrying"
    assert ops.live_states == {"queued": 9, "in_flight": 0, "retrying": 1}
    ops.started(OpStarted(at=NOW + 3, op_id=7, backend="grid", attempt=2))
    ops.finished(OpFinished(at=NOW + 4, op_id=7, backend="grid", kind=OpKind.FETCH_OUTPUT, outcome="done", latency=0.5))
    ops.finished(OpFinished(at=NOW + 4, op_id=3, backend="grid", kind=OpKind.FETCH_OUTPUT, outcome="cancelled"))
    assert ops.live_states == {"queued": 8, "in_flight": 0, "retrying": 0}
    assert [view.op_id for view in ops.shown(20)] == [1, 2, 4, 5, 6, 8, 9, 10, 3, 7]
    assert [(view.op_id, view.state) for view in ops.shown(20)[-2:]] == [(3, "cancelled"), (7, "done")]
    assert [view.op_id for view in ops.live()] == list(range(1, 11)), "oldest queued first"
    assert [view.state for view in ops.live()].count("queued") == 8
    assert ops.fade(ops.ops[7], NOW + 4 + FADE_SECONDS / 2) == 0.5
    assert ops.expire(NOW + 5 + FADE_SECONDS)
    assert 7 not in ops.ops
    assert len(ops.ops) == 8
    # The log answers for every operation, moved or not.
    done = ops.op_log[7]
    assert (done.state, done.attempt, done.latency) == ("done", 2, 0.5)
    assert ops.op_log[5].state == "queued"
    assert ops.op_log[5].job_ids == ("1",)
    assert "op 7 error: slow" in ops.errors["1"][-1]


def test_a_finished_operation_queued_again_rejoins_the_queue_at_its_end() -> None:
    ops = OpsView()
    for op_id in (1, 2):
        ops.queued(fetch(op_id))
    ops.finished(OpFinished(at=NOW, op_id=1, backend="grid", kind=OpKind.FETCH_OUTPUT, outcome="done"))
    ops.queued(fetch(1))
    assert [(view.op_id, view.state) for view in ops.shown(5)] == [(2, "queued"), (1, "queued")]
    assert ops.live_states == {"queued": 2}


def test_each_job_names_the_operations_of_the_log_that_asked_about_it_by_their_own_ids() -> None:
    ops = OpsView()
    record = fetch(123_456)
    ops.queued(record)
    ops.queued(fetch(123_457, "2"))
    poll = OpRecord(
        op_id=123_458, kind=OpKind.POLL, backend="grid", job_ids=("2", "1"), state=OpState.QUEUED, enqueued_at=NOW
    )
    ops.queued(poll)
    assert ops.ops_of["1"] == (123_456, 123_458)
    assert ops.ops_of["1"][0] is record.op_id
    assert ops.ops_of["2"] == (123_457, 123_458)
    assert list(ops.ops_of) == ["1", "2"]


def test_the_store_names_the_jobs_of_a_queued_operation_by_the_fold_s_own_strings() -> None:
    store = JobStore()
    store.apply(JobAdded(at=NOW, job=JobRecord(job_id="12345", backend="grid", status=JobStatus.COMPLETING)))
    decoded = "".join(["123", "45"])
    assert decoded is not store.fold.jobs["12345"].job_id
    store.apply(OpQueued(at=NOW, op=fetch(9, decoded)))
    kept = store.fold.jobs["12345"].job_id
    assert store.fold.ops[9].job_ids[0] is kept
    assert store.ops[9].job_ids[0] is kept
    assert next(iter(store.ops_of)) is kept
    assert store.ops_of["12345"] == (9,)


def test_each_job_names_its_last_twelve_operations_oldest_first_and_none_the_log_forgot() -> None:
    ops = OpsView()
    for op_id in range(5, 20):
        ops.queued(fetch(op_id))
    assert ops.ops_of["1"] == tuple(range(8, 20))
    assert ops.ops_of.get("2", ()) == ()
    assert len(ops.ops_of) == 1
    for op_id in range(20, 20 + _OP_LOG):
        ops.queued(fetch(op_id, "2"))
    assert "1" not in ops.ops_of
    assert ops.ops_of["2"] == tuple(range(8 + _OP_LOG, 20 + _OP_LOG))
