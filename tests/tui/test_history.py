"""Job histories kept packed: what goes in comes out as the same transitions, up to the limit."""

from __future__ import annotations

from ganga_tui.job_rows import Transition
from ganga_tui.views.history import Histories
from monitor_core import JobStatus

S = JobStatus


def test_a_history_reads_back_every_field_of_every_transition_in_order() -> None:
    histories = Histories(64)
    steps = [
        Transition(1_796_092_713.589322, None, S.SUBMITTED, "added"),
        Transition(1_796_092_720.25, S.SUBMITTED, S.RUNNING, "poll", "Running: Application"),
        Transition(1_796_092_731.125, S.RUNNING, S.COMPLETING, "event", ""),
        Transition(1_796_092_731.5, S.COMPLETING, S.FAILED, "fetch", "exit code 42"),
    ]
    for step in steps:
        histories.add("7", step.at, step.old, step.new, step.source, step.info)
    histories.add("8", 5.0, S.NEW, S.TEMPLATE, "user", "Running: Application")
    assert histories["7"] == steps
    assert histories["8"] == [Transition(5.0, S.NEW, S.TEMPLATE, "user", "Running: Application")]
    assert "7" in histories
    assert "9" not in histories
    assert histories.get("9") is None
    assert sorted(histories) == ["7", "8"]
    assert len(histories) == 2


def test_every_status_survives_as_old_and_as_new() -> None:
    histories = Histories(64)
    statuses = list(JobStatus)
    for old, new in zip([None, *statuses], statuses, strict=False):
        histories.add("1", 1.0, old, new, "poll")
    assert [(step.old, step.new) for step in histories["1"]] == list(zip([None, *statuses], statuses, strict=False))


def test_a_history_keeps_only_its_latest_transitions() -> None:
    histories = Histories(64)
    for n in range(100):
        histories.add("1", float(n), S.RUNNING, S.RUNNING, "poll", f"step {n % 5}")
    steps = histories["1"]
    assert len(steps) == 64
    assert [step.at for step in steps] == [float(n) for n in range(36, 100)]
    assert [step.info for step in steps[:3]] == ["step 1", "step 2", "step 3"]


def test_texts_said_of_many_jobs_are_kept_once() -> None:
    histories = Histories(64)
    for n in range(1_000):
        histories.add(str(n), 1.0, S.RUNNING, S.COMPLETED, "poll", "Done: " + "Execution Complete")
    first, last = histories["0"][0], histories["999"][0]
    assert first.info == "Done: Execution Complete"
    assert first.info is last.info
    assert first.source is last.source
