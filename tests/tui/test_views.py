"""Each view over the one fold, alone: jobs, operations, backends, groups and warnings."""

from __future__ import annotations

import tracemalloc
from array import array

from ganga_tui.job_filter import JobFilter
from ganga_tui.job_rows import NO_WARNINGS, WarningKind
from ganga_tui.views.backends import BackendsView
from ganga_tui.views.groups import GroupsView
from ganga_tui.views.jobs import JobsView
from ganga_tui.views.ops import FADE_SECONDS, OpsView
from ganga_tui.views.warnings import WarningsView
from monitor_core import (
    BackendRecord,
    JobAdded,
    JobChanged,
    JobRecord,
    JobStatus,
    LagSampled,
    OpFinished,
    OpKind,
    OpRecord,
    OpStarted,
    OpState,
    Rescheduled,
    Snapshot,
    StateFold,
)

S = JobStatus
NOW = 1_000.0


def record(job_id: str, status: JobStatus = S.RUNNING, **more: object) -> JobRecord:
    fields: dict[str, object] = {"backend": "grid", "group": "g", "status_since": NOW - 5, "last_confirmed": NOW - 5}
    fields.update(more)
    return JobRecord(job_id=job_id, status=status, **fields)  # type: ignore[arg-type]


def folded(*jobs: JobRecord, backends: tuple[BackendRecord, ...] = ()) -> StateFold:
    fold = StateFold()
    fold.apply(Snapshot(at=NOW, session="s", jobs=jobs, backends=backends))
    return fold


def test_jobs_view_mirrors_the_fold_and_refreshes_a_busy_job_once() -> None:
    fold = folded(record("2"), record("10"), record("1", S.SUBMITTED))
    jobs = JobsView()
    jobs.reset(fold)
    jobs.refresh_view()
    assert [jobs.get_row_at(i).job_id for i in range(jobs.row_count)] == ["1", "2", "10"]
    row = jobs.rows["2"]
    version = row.version
    for step, (old, new) in enumerate(((S.RUNNING, S.COMPLETING), (S.COMPLETING, S.COMPLETED))):
        event = JobChanged(at=NOW + step, job_id="2", backend="grid", old=old, new=new, source="poll")
        fold.apply(event)
        jobs.changed(event, fold)
    touched = jobs.refresh({"2"}, fold)
    assert touched == [row]
    assert row.version == version + 1, "two changes to one job in a batch: one row refresh"
    assert row.status == S.COMPLETED
    assert [t.new for t in jobs.history["2"]] == [S.RUNNING, S.COMPLETING, S.COMPLETED]
    jobs.set_filter(JobFilter.parse("s:running"))
    jobs.refresh_view()
    assert [jobs.get_row_at(i).job_id for i in range(jobs.row_count)] == ["10"]
    assert jobs.index_of("2") is None


def shown(jobs: JobsView) -> list[str]:
    jobs.refresh_view()
    return [jobs.get_row_at(i).job_id for i in range(jobs.row_count)]


def change(fold: StateFold, jobs: JobsView, job_id: str, old: JobStatus, new: JobStatus, info: str = "") -> None:
    event = JobChanged(at=NOW, job_id=job_id, backend="grid", old=old, new=new, source="poll", info=info)
    fold.apply(event)
    jobs.changed(event, fold)
    jobs.refresh({job_id}, fold)


def test_a_filtered_view_follows_rows_entering_and_leaving_it() -> None:
    fold = folded(*(record(str(n), name=f"batch{n % 3}.{n}") for n in range(1, 10)))
    jobs = JobsView()
    jobs.reset(fold)
    jobs.set_filter(JobFilter.parse("s:running"))
    assert shown(jobs) == [str(n) for n in range(1, 10)]
    change(fold, jobs, "4", S.RUNNING, S.COMPLETING)
    assert shown(jobs) == ["1", "2", "3", "5", "6", "7", "8", "9"], "a row that stops matching leaves"
    change(fold, jobs, "5", S.RUNNING, S.RUNNING, info="still at CERN")
    assert not jobs.view_dirty, "a row that still matches keeps its place: nothing is rebuilt"
    jobs.set_filter(JobFilter.parse("cern"))
    assert shown(jobs) == ["5"]
    change(fold, jobs, "7", S.RUNNING, S.RUNNING, info="moved to CERN")
    assert shown(jobs) == ["5", "7"], "a row that starts matching enters, in its place"


def test_typing_one_more_letter_searches_the_view_and_finds_what_a_full_search_finds() -> None:
    fold = folded(*(record(str(n), name=f"batch{n % 3}.{n}") for n in range(1, 13)))
    jobs = JobsView()
    jobs.reset(fold)
    jobs.set_filter(JobFilter.parse("batch"))
    assert len(shown(jobs)) == 12
    jobs.set_filter(JobFilter.parse("batch1"))
    assert jobs._narrowed_from is not None
    assert shown(jobs) == ["1", "4", "7", "10"]
    # A job renamed while the narrowing waits: it is not in the view being narrowed, yet matches.
    jobs.set_filter(JobFilter.parse("batch1."))
    fold.apply(JobAdded(at=NOW, job=record("3", name="batch1.3")))
    jobs.refresh({"3"}, fold)
    assert shown(jobs) == ["1", "3", "4", "7", "10"]
    # Words that do not narrow (another status, a word dropped) search every job again.
    jobs.set_filter(JobFilter.parse("batch2"))
    assert jobs._narrowed_from is None
    assert shown(jobs) == ["2", "5", "8", "11"]
    for query in ("batch2 s:running", "batch2.1", "batch", ""):
        jobs.set_filter(JobFilter.parse(query))
        expected = [str(n) for n in range(1, 13) if JobFilter.parse(query).matches(jobs.rows[str(n)])]
        assert shown(jobs) == expected, query


def test_each_letter_typed_into_the_filter_over_many_jobs_copies_none_of_their_ids_or_texts() -> None:
    fold = folded(*(record(str(n), group=f"batch00{n % 2}") for n in range(1, 100_001)))
    jobs = JobsView()
    jobs.reset(fold)
    jobs.set_filter(JobFilter.parse("b"))
    tracemalloc.start()
    try:
        assert len(shown(jobs)) == 100_000
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The view's list of rows (800 kB), no lower-case text of each job kept for the next search
    # (8 MB here, 12 MB of the demo's 100,000 jobs, for as long as the viewer ran).
    assert kept < 1_500_000, kept
    for query, expected in (("ba", 100_000), ("batch00", 100_000), ("batch001", 50_000)):
        jobs.set_filter(JobFilter.parse(query))
        tracemalloc.start()
        try:
            assert len(shown(jobs)) == expected
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # The new view's list of rows (800 kB at 100,000, twice that while it grows), nothing the
        # size of a set of the view's ids (4 MB).
        assert peak < 2_500_000, (query, peak)
    change(fold, jobs, "3", S.RUNNING, S.RUNNING, info="moved")
    assert jobs.view_dirty is False, "a row that stays in the view keeps its place"
    fold.apply(JobAdded(at=NOW, job=record("1", group="batch000")))
    jobs.refresh({"1"}, fold)
    assert len(shown(jobs)) == 49_999, "a row that leaves the view leaves it"


def test_ops_view_keeps_finished_operations_a_while_and_their_errors_on_each_job() -> None:
    ops = OpsView()
    op = OpRecord(op_id=4, kind=OpKind.POLL, backend="grid", job_ids=("1", "2"), state=OpState.QUEUED, enqueued_at=NOW)
    ops.queued(op)
    ops.started(OpStarted(at=NOW + 1, op_id=4, backend="grid", attempt=1))
    assert ops.ops[4].state == "in_flight"
    ops.finished(OpFinished(at=NOW + 2, op_id=4, backend="grid", kind=OpKind.POLL, outcome="timeout", error="slow"))
    assert ops.ops[4].finished
    assert "timeout: slow" in next(iter(ops.errors["2"]))
    assert list(ops.ops_of["1"]) == [4]
    assert not ops.expire(NOW + 2 + FADE_SECONDS / 2)
    assert ops.expire(NOW + 3 + FADE_SECONDS)
    assert 4 in ops.op_log
    assert ops.live() == []


def test_backends_view_keeps_both_lags_history_and_states_the_collect_bound() -> None:
    fold = StateFold()
    view = BackendsView(fold)
    for lag, results in ((0.0, 0.0), (12.0, 30.0), (3.0, 45.0)):
        sample = BackendRecord(name="grid", lag=lag, results_lag=results, poll_interval=10.0, collect_bound=20.0)
        fold.backends["grid"] = sample
        view.sampled(sample)
    assert list(view.lag_history["grid"]) == [0.0, 12.0, 3.0]
    assert list(view.results_history["grid"]) == [0.0, 30.0, 45.0]
    assert not view.is_lagging("grid")
    assert view.collect_bound() == 20.0


def test_groups_view_learns_usual_times_and_announces_failures_and_finished_groups_once() -> None:
    fold = folded(record("1"), record("2"))
    groups = GroupsView(fold)
    groups.reset()
    for job_id, new in (("1", S.COMPLETED), ("2", S.FAILED)):
        before = fold.jobs[job_id]
        event = JobChanged(at=NOW + 15, job_id=job_id, backend="grid", old=S.RUNNING, new=new, source="poll")
        fold.apply(event)
        groups.changed(event, before)
    assert groups.group("g").final == 2
    assert list(groups.group("g").durations[S.RUNNING]) == [20.0, 20.0]
    assert groups.take_news() == (["2"], ["g"])
    assert groups.take_news() == ([], [])
    assert groups.overall().total == 2


def _warnings(fold: StateFold, backends: BackendsView | None = None) -> tuple[WarningsView, JobsView]:
    jobs = JobsView()
    jobs.reset(fold)
    backends = backends or BackendsView(fold)
    return WarningsView(fold, jobs, GroupsView(fold), backends, unconfirmed_factor=3.0, stuck_factor=4.0), jobs


def test_a_job_waiting_its_turn_within_the_plan_is_not_a_warning() -> None:
    grid = BackendRecord(name="grid", poll_interval=10.0, collect_bound=120.0)
    stale = {"last_confirmed": NOW - 100, "status_since": NOW - 100}
    fold = folded(record("planned", **stale), record("late", **stale), record("never", **stale), backends=(grid,))
    fold.apply(Rescheduled(at=NOW - 90, backend="grid", next_poll_at=NOW + 20, job_ids=("planned",)))
    fold.apply(Rescheduled(at=NOW - 90, backend="grid", next_poll_at=NOW - 60, job_ids=("late",)))
    warnings, jobs = _warnings(fold)
    warnings.scan(NOW)
    assert jobs.rows["planned"].warnings == frozenset(), "its next poll is ahead: on schedule"
    assert WarningKind.UNCONFIRMED in jobs.rows["late"].warnings, "its planned poll is long past"
    assert WarningKind.UNCONFIRMED in jobs.rows["never"].warnings, "no plan known and unconfirmed for long"


def test_outputs_queued_within_the_collect_bound_are_no_warning_and_a_failed_collection_is() -> None:
    grid = BackendRecord(name="grid", poll_interval=10.0, collect_bound=120.0)
    fold = folded(
        record("queued", S.COMPLETING, status_since=NOW - 100),
        record("overdue", S.COMPLETING, status_since=NOW - 200),
        record("gave-up", S.FAILED, collect_error="fetch timed out 5 times"),
        backends=(grid,),
    )
    warnings, jobs = _warnings(fold)
    for row in jobs.rows.values():
        warnings.refreshed(row)
    warnings.scan(NOW)
    assert jobs.rows["queued"].warnings == frozenset()
    assert jobs.rows["overdue"].warnings == {WarningKind.BACKEND_DONE}
    assert jobs.rows["gave-up"].warnings == {WarningKind.COLLECT_FAILED}
    assert set(warnings.warned) == {"overdue", "gave-up"}
    # Collected after all: the warning goes with the reason.
    fold.apply(JobChanged(at=NOW, job_id="gave-up", backend="grid", old=S.FAILED, new=S.COMPLETED, source="user"))
    jobs.refresh({"gave-up"}, fold)
    warnings.refreshed(jobs.rows["gave-up"])
    assert "gave-up" not in warnings.warned


def test_warnings_that_come_and_go_leave_every_row_holding_the_one_shared_set() -> None:
    grid = BackendRecord(name="grid", poll_interval=10.0, collect_bound=120.0)
    ids = [str(n) for n in range(50)]
    fold = folded(*(record(job_id, S.COMPLETING, status_since=NOW - 200) for job_id in ids), backends=(grid,))
    warnings, jobs = _warnings(fold)
    warnings.scan(NOW)
    assert len({id(jobs.rows[job_id].warnings) for job_id in ids}) == 1
    for job_id in ids:
        fold.apply(JobChanged(at=NOW, job_id=job_id, backend="grid", old=S.COMPLETING, new=S.COMPLETED, source="f"))
    jobs.refresh(ids, fold)
    for job_id in ids:
        warnings.refreshed(jobs.rows[job_id])
    # Cleared, the rows share one empty set: not fifty of 216 bytes each.
    assert {id(jobs.rows[job_id].warnings) for job_id in ids} == {id(NO_WARNINGS)}
    assert not warnings.warned


def test_a_long_wait_in_the_sites_queue_is_not_stuck_and_a_long_run_is() -> None:
    grid = BackendRecord(name="grid", poll_interval=10.0)
    quick = [record(str(n), S.COMPLETED) for n in range(20)]
    fold = folded(
        *quick,
        record("queued", S.SUBMITTED, status_since=NOW - 300, last_confirmed=NOW),
        record("hung", S.RUNNING, status_since=NOW - 300, last_confirmed=NOW),
        backends=(grid,),
    )
    warnings, jobs = _warnings(fold)
    group = warnings._groups.group("g")
    for status in (S.SUBMITTED, S.RUNNING):
        group.durations[status] = array("d", [20.0] * 20)
        group.left[status] = 20
    warnings.scan(NOW)
    assert jobs.rows["queued"].warnings == frozenset(), "the grid's queue, not the job: no bound to hold it to"
    assert jobs.rows["hung"].warnings == {WarningKind.STUCK}


def test_outputs_queued_at_the_peak_of_a_flood_are_on_plan_while_the_queue_drains() -> None:
    fold = folded(
        record("early", S.COMPLETING, status_since=NOW - 150),
        record("stuck", S.COMPLETING, status_since=NOW - 400),
        backends=(BackendRecord(name="grid", poll_interval=10.0),),
    )
    backends = BackendsView(fold)
    # The flood: 200 s of outputs queued at its peak, 20 s left now.
    for bound in (200.0, 150.0, 80.0, 20.0):
        sample = BackendRecord(name="grid", poll_interval=10.0, collect_bound=bound)
        fold.apply(LagSampled(at=NOW, backend=sample))
        backends.sampled(sample)
    warnings, jobs = _warnings(fold, backends)
    # The group's first outputs were fetched in seconds (their group was nearly done): no yardstick here.
    group = warnings._groups.group("g")
    group.durations[S.COMPLETING] = array("d", [2.0] * 10)
    warnings.scan(NOW)
    assert jobs.rows["early"].warnings == frozenset(), "queued at the peak: 200 s is within its plan"
    assert jobs.rows["stuck"].warnings == {WarningKind.BACKEND_DONE}, "longer than the whole flood"
    # The queue emptied: the next flood is planned afresh.
    empty = BackendRecord(name="grid", poll_interval=10.0, collect_bound=0.0)
    fold.apply(LagSampled(at=NOW, backend=empty))
    backends.sampled(empty)
    assert backends.collect_plan("grid") == 0.0


def test_a_job_added_later_joins_every_view() -> None:
    fold = folded()
    jobs = JobsView()
    groups = GroupsView(fold)
    added = JobAdded(at=NOW, job=record("7", group="late"))
    fold.apply(added)
    groups.added(added.job)
    jobs.added(added.job, fold)
    assert jobs.rows["7"].group == "late"
    assert groups.group("late").total == 1


def test_a_job_first_heard_of_by_a_change_has_a_row_and_its_history_from_that_change_on() -> None:
    fold = folded(record("1"))
    jobs = JobsView()
    jobs.reset(fold)
    event = JobChanged(at=NOW, job_id="99", backend="grid", old=S.RUNNING, new=S.COMPLETING, source="poll")
    fold.apply(event)
    jobs.changed(event, fold)
    assert jobs.rows["99"].status == S.COMPLETING
    assert [(t.old, t.new) for t in jobs.history["99"]] == [(S.RUNNING, S.COMPLETING)]
    assert shown(jobs) == ["1", "99"]
    assert sorted(jobs.history) == ["1", "99"]


def test_a_group_keeps_the_latest_two_hundred_times_spent_in_a_status() -> None:
    fold = folded(*(record(str(n)) for n in range(250)))
    groups = GroupsView(fold)
    groups.reset()
    for n in range(250):
        before = fold.jobs[str(n)]
        event = JobChanged(at=NOW + n, job_id=str(n), backend="grid", old=S.RUNNING, new=S.COMPLETED, source="poll")
        fold.apply(event)
        groups.changed(event, before)
    kept = groups.group("g").durations[S.RUNNING]
    assert len(kept) == 200
    assert list(kept) == [float(n + 5) for n in range(50, 250)], "each ran 5 s before NOW, until NOW + n"
