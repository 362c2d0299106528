"""JobStore, the table's row store, and the small plain helpers (no Textual app needed)."""

from __future__ import annotations

from typing import Any

import pytest

from ganga_tui.job_store import JobFilter, JobRow, JobStore, WarningKind
from ganga_tui.notify import Notifier, osc9, osc777
from ganga_tui.screens.prompts import parse_seconds
from ganga_tui.widgets._format import duration, shorten
from ganga_tui.widgets.progress_panel import stacked_bar
from monitor_core import (
    BreakerChanged,
    JobAdded,
    JobChanged,
    JobRecord,
    JobStatus,
    OpFinished,
    OpKind,
    OpQueued,
    OpRecord,
    OpStarted,
    OpState,
    Rescheduled,
    UpdateRejected,
)

from .fixed_data import NOW, session_events

S = JobStatus


def loaded() -> JobStore:
    store = JobStore()
    store.apply_many(session_events())
    store.refresh_view()
    return store


def test_snapshot_and_deltas_build_rows_counts_and_groups() -> None:
    store = loaded()
    assert store.total == store.row_count == 60
    assert store.counts[S.RUNNING] == 20
    assert store.final == 32
    # Five of its eleven jobs have left "running": the ones that left first are the quick ones.
    assert store.groups["dirac-sim-batch000"].usual_time(S.RUNNING) is None
    _rest_of_batch000_finishes(store)
    usual = store.groups["dirac-sim-batch000"].usual_time(S.RUNNING)
    assert usual is not None
    assert 20.0 < usual < 40.0, "the five quick ones and the five that ran 30-34 s"
    assert [t.new for t in store.history["1"]] == [S.COMPLETED, S.RUNNING, S.COMPLETING, S.COMPLETED]
    assert store.is_lagging("dirac-sim")
    assert not store.is_lagging("local")
    assert list(store.lag_history["dirac-sim"])[-3:] == [14.0, 18.5, 24.0]


def test_a_job_change_bumps_the_row_version_and_moves_counts() -> None:
    store = loaded()
    row = store.rows["16"]
    version = row.version
    store.apply(JobChanged(at=NOW, job_id="16", backend="dirac-sim", old=S.RUNNING, new=S.COMPLETING, source="poll"))
    assert row.version > version
    assert row.status == S.COMPLETING
    assert row.next_poll_at is None
    assert store.counts[S.RUNNING] == 19
    assert store.counts[S.COMPLETING] == 3


def test_a_change_to_a_job_not_in_the_snapshot_adds_it_with_what_the_change_says() -> None:
    # A stream joined mid-way (a broker's viewer) hears of jobs by their changes: the fold keeps them.
    store = loaded()
    failed = store.counts[S.FAILED]
    store.apply(JobChanged(at=NOW, job_id="999", backend="local", old=S.RUNNING, new=S.FAILED, source="poll"))
    assert store.rows["999"].status == S.FAILED
    assert store.total == 61
    assert store.counts[S.FAILED] == failed + 1
    assert store.counts[S.RUNNING] == 20


def test_operation_lifecycle_confirms_jobs_and_fades_out() -> None:
    store = loaded()
    record = OpRecord(
        op_id=7, kind=OpKind.POLL, backend="local", job_ids=("51", "52"), state=OpState.QUEUED, enqueued_at=NOW
    )
    store.apply(OpQueued(at=NOW, op=record))
    store.apply(OpStarted(at=NOW + 1, op_id=7, backend="local", attempt=1))
    assert store.rows["51"].polling
    store.apply(OpFinished(at=NOW + 2, op_id=7, backend="local", kind=OpKind.POLL, outcome="done", latency=1.0))
    assert not store.rows["51"].polling
    assert store.rows["51"].last_confirmed == NOW + 2
    # The next poll is what the session publishes, never a guess from the base interval.
    published = store.rows["51"].next_poll_at
    store.apply(Rescheduled(at=NOW + 2, backend="local", next_poll_at=NOW + 2 + 17.5, job_ids=("51", "52")))
    assert published != NOW + 2 + 17.5
    assert store.rows["51"].next_poll_at == store.rows["52"].next_poll_at == NOW + 2 + 17.5
    assert store.ops[7].finished
    assert store.fade(store.ops[7], NOW + 3.5) == pytest.approx(0.5)
    store.expire_ops(NOW + 4)
    assert 7 in store.ops
    assert store.expire_ops(NOW + 6)
    assert 7 not in store.ops
    assert 7 in store.op_log
    assert list(store.ops_of["51"]) == [504, 7]


def test_a_retried_operation_stays_and_errors_reach_its_jobs() -> None:
    store = loaded()
    record = OpRecord(
        op_id=8, kind=OpKind.POLL, backend="dirac-sim", job_ids=("16",), state=OpState.QUEUED, enqueued_at=NOW
    )
    store.apply(OpQueued(at=NOW, op=record))
    store.apply(
        OpFinished(at=NOW, op_id=8, backend="dirac-sim", kind=OpKind.POLL, outcome="error", error="boom", retry_in=1.0)
    )
    assert store.ops[8].state == "retrying"
    assert not store.ops[8].finished
    assert "boom" in store.errors["16"][-1]
    store.apply(UpdateRejected(at=NOW, backend="dirac-sim", job_id="16", category="garbage", reason="?!"))
    assert store.rejections == 1
    assert "garbage" in store.errors["16"][-1]


def test_breaker_changes_show_at_once() -> None:
    store = loaded()
    store.apply(BreakerChanged(at=NOW, backend="dirac-sim", state="open", reason="5 failures"))
    assert store.backends["dirac-sim"].breaker == "open"


def _rest_of_batch000_finishes(store: JobStore) -> None:
    """Jobs 16 to 20 leave "running" after 30-34 s: nine in ten of batch000's have, but job 15."""
    for job_id in range(16, 21):
        store.apply(
            JobChanged(
                at=NOW - 5,
                job_id=str(job_id),
                backend="dirac-sim",
                old=S.RUNNING,
                new=S.COMPLETED,
                source="p",
            )
        )


def test_a_job_is_stuck_only_once_most_of_its_group_has_moved_on() -> None:
    store = loaded()
    assert store.scan_warnings(NOW) == 3
    assert not store.rows["15"].warnings, "six of its group still run: how long they take is not known yet"
    _rest_of_batch000_finishes(store)
    assert store.scan_warnings(NOW) == 4
    assert store.rows["15"].warnings == {WarningKind.STUCK}


def test_warnings_follow_the_rules_and_clear_when_the_job_moves_on() -> None:
    store = loaded()
    _rest_of_batch000_finishes(store)
    assert store.scan_warnings(NOW) == 4
    assert store.rows["22"].warnings == {WarningKind.UNCONFIRMED}
    assert store.rows["15"].warnings == {WarningKind.STUCK}
    assert store.rows["40"].warnings == {WarningKind.BACKEND_DONE}
    store.apply(JobChanged(at=NOW, job_id="15", backend="dirac-sim", old=S.RUNNING, new=S.COMPLETING, source="poll"))
    assert not store.rows["15"].warnings
    assert "15" not in store.warned


def test_a_budgeted_scan_covers_every_job_over_several_calls() -> None:
    store = loaded()
    found = 0
    for _ in range(30):
        found = store.scan_warnings(NOW, budget=2)
    assert found == 3


def test_filter_words_parse_and_match() -> None:
    query = JobFilter.parse("s:running,failed b:local g:grp is:warn Batch 7")
    assert query.statuses == {S.RUNNING, S.FAILED}
    assert query.backends == {"local"}
    assert query.groups == {"grp"}
    assert query.warnings_only
    assert query.text == "batch 7"
    assert query.describe() == "s:failed,running b:local g:grp is:warn batch 7"
    assert JobFilter.parse("s:nonsense").text == "s:nonsense"
    assert not JobFilter.parse("").active


def test_filter_words_are_found_in_any_field_in_any_case_and_each_word_must_be() -> None:
    row = JobRow(
        JobRecord(job_id="A17", backend="grid", status=S.RUNNING, name="Higgs.Fit", group="Run2", info="Done: OK")
    )

    def matches(query: str) -> bool:
        return JobFilter.parse(query).matches(row)

    assert all(matches(query) for query in ("a17", "HIGGS", "fit", "run2", "done:", "ok", "run2 higgs"))
    assert not matches("fit run3"), "every word must be found"
    assert not matches("fitrun2"), "a word lies within one field"
    many = [
        JobRow(JobRecord(job_id=str(n), backend="grid", status=S.RUNNING, group="Run2", info="Done")) for n in range(5)
    ]
    predicate = JobFilter.parse("run2").predicate()
    assert all(predicate(each) for each in many), "rows sharing a group each match through it"


def test_view_rebuilds_only_when_membership_or_order_may_change() -> None:
    store = loaded()
    assert not store.view_dirty
    record = OpRecord(
        op_id=9, kind=OpKind.POLL, backend="local", job_ids=("51",), state=OpState.QUEUED, enqueued_at=NOW
    )
    store.apply(OpQueued(at=NOW, op=record))
    store.apply(OpFinished(at=NOW, op_id=9, backend="local", kind=OpKind.POLL, outcome="done"))
    assert not store.view_dirty, "a confirmation does not move rows in an id-sorted, unfiltered view"
    store.set_filter(JobFilter.parse("s:running"))
    assert store.refresh_view()
    assert store.row_count == 20
    store.apply(JobChanged(at=NOW, job_id="16", backend="dirac-sim", old=S.RUNNING, new=S.FAILED, source="poll"))
    assert store.view_dirty
    assert store.refresh_view()
    assert store.row_count == 19
    assert store.index_of("16") is None
    assert store.index_of("17") is not None


def test_sorting_by_each_column_and_numeric_ids() -> None:
    store = JobStore()
    for job_id in ("10", "9", "x1", "100"):
        store.apply(JobAdded(at=NOW, job=JobRecord(job_id=job_id, backend="b", status=S.RUNNING, name=f"n{job_id}")))
    store.refresh_view()
    assert [store.get_row_at(i).job_id for i in range(4)] == ["9", "10", "100", "x1"]
    store.sort("name", reverse=True)
    store.refresh_view()
    assert store.get_row_at(0).job_id == "x1"


def test_group_completion_and_failures_are_news_once() -> None:
    store = JobStore()
    for job_id in ("1", "2"):
        store.apply(JobAdded(at=NOW, job=JobRecord(job_id=job_id, backend="b", status=S.RUNNING, group="g")))
    store.apply(JobChanged(at=NOW, job_id="1", backend="b", old=S.RUNNING, new=S.FAILED, source="poll"))
    store.apply(JobChanged(at=NOW + 10, job_id="2", backend="b", old=S.RUNNING, new=S.COMPLETED, source="poll"))
    assert store.take_news() == (["1"], ["g"])
    assert store.take_news() == ([], [])
    assert store.groups["g"].eta(NOW + 10) == 0.0


def test_eta_follows_the_recent_completion_rate() -> None:
    store = JobStore()
    for i in range(12):
        store.apply(JobAdded(at=NOW, job=JobRecord(job_id=str(i), backend="b", status=S.RUNNING, group="g")))
    for i in range(6):
        store.apply(JobChanged(at=NOW + i, job_id=str(i), backend="b", old=S.RUNNING, new=S.COMPLETED, source="poll"))
    eta = store.groups["g"].eta(NOW + 6)
    assert eta == pytest.approx(6 / (6 / 6))
    assert store.overall().final == 6


def test_stacked_bar_fills_the_width_and_shows_rare_states() -> None:
    counts = {S.COMPLETED: 998, S.FAILED: 1, S.RUNNING: 1}
    bar = dict(stacked_bar(counts, 1000, 20))
    assert sum(bar.values()) == 20
    assert bar["failed"] == 1
    assert bar["running"] == 1
    assert stacked_bar({}, 0, 20) == []


def test_small_formatters() -> None:
    assert duration(None) == "-"
    assert duration(3.21) == "3.2s"
    assert duration(75) == "1m15"
    assert duration(7300) == "2h01"
    assert shorten("dirac-sim-batch000.17", 12) == "dirac…000.17"
    assert len(shorten("abcdef", 3)) == 3
    assert parse_seconds("2m") == 120
    assert parse_seconds("500ms") == 0.5
    assert parse_seconds("0") is None
    assert parse_seconds("soon") is None


def test_notifier_rings_and_sends_both_desktop_escapes_only_when_enabled() -> None:
    written: list[str] = []
    notifier = Notifier(written.append)
    assert notifier.news(["3"], []) == 0
    assert written == []
    notifier.enabled = True
    assert notifier.news(["3", "4"], ["g1"]) == 2
    assert written[0] == "\a" + osc9("2 jobs failed: 3, 4") + osc777("2 jobs failed", "3, 4")
    assert osc777("a;b", "c\x07d") == "\x1b]777;notify;a,b;cd\x07"
    assert osc9("x") == "\x1b]9;x\x07"


def test_the_slices_of_a_tick_carry_on_a_pass_and_never_start_one() -> None:
    store = loaded()
    active = [job_id for job_id, row in store.rows.items() if not row.status.is_final]
    assert len(active) > 2
    store.scan_warnings(NOW, budget=len(active))
    walked: list[int] = []
    rows = store.jobs.rows

    class Counted(dict[str, JobRow]):
        def items(self) -> Any:
            walked.append(len(self))
            return super().items()

    store.jobs.rows = Counted(rows)
    for _ in range(5):
        store.scan_warnings(NOW, budget=2, resume=True)
    assert walked == [], "a finished pass is not started again by a tick's later slices"
    store.scan_warnings(NOW, budget=2)
    assert len(walked) == 1, "the next tick starts one"
