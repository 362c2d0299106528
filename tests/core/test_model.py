"""Ganga's state machine, and the scheduler's use of it: only legal transitions, none lost."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor_core import (
    FINAL_STATUSES,
    TRANSITIONS,
    EventBus,
    IllegalTransition,
    Job,
    JobChanged,
    JobStatus,
    OutputSink,
    Scheduler,
    UpdateRejected,
    check_transition,
    is_legal_transition,
)
from monitor_core.backends import StatusReport

from .fakes import ScriptedBackend

statuses = st.sampled_from(list(JobStatus))


def test_graph_matches_gangas_status_graph_for_a_few_known_edges() -> None:
    assert is_legal_transition(JobStatus.SUBMITTED, JobStatus.COMPLETED)
    assert is_legal_transition(JobStatus.RUNNING, JobStatus.COMPLETING)
    assert is_legal_transition(JobStatus.COMPLETING, JobStatus.FAILED)
    assert not is_legal_transition(JobStatus.COMPLETED, JobStatus.RUNNING)
    assert not is_legal_transition(JobStatus.NEW, JobStatus.RUNNING)
    assert not is_legal_transition(JobStatus.REMOVED, JobStatus.NEW)
    with pytest.raises(IllegalTransition, match="running -> new"):
        check_transition("7", JobStatus.RUNNING, JobStatus.NEW)


@given(statuses)
def test_staying_put_is_always_legal_and_removed_is_a_dead_end(status: JobStatus) -> None:
    assert is_legal_transition(status, status)
    assert not TRANSITIONS[JobStatus.REMOVED]
    assert set(TRANSITIONS) == set(JobStatus)


def test_every_status_but_template_and_incomplete_is_reachable_from_new() -> None:
    seen, frontier = {JobStatus.NEW}, [JobStatus.NEW]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert set(JobStatus) - seen == {JobStatus.TEMPLATE, JobStatus.INCOMPLETE}
    assert seen | {JobStatus.INCOMPLETE} >= FINAL_STATUSES


def _scheduler(tmp_path: Path) -> tuple[Scheduler, list[object]]:
    bus = EventBus()
    scheduler = Scheduler([ScriptedBackend("b")], bus=bus, outputs=OutputSink(tmp_path / "out"))
    events: list[object] = []
    bus.publish = events.append  # type: ignore[method-assign]
    return scheduler, events


@settings(max_examples=300, deadline=None)
@given(reports=st.lists(statuses, max_size=12))
def test_scheduler_applies_only_legal_transitions_and_loses_none(
    tmp_path_factory: pytest.TempPathFactory, reports: list[JobStatus]
) -> None:
    scheduler, events = _scheduler(tmp_path_factory.mktemp("s"))
    now = time.time()
    job = Job(job_id="1", backend="b", backend_id="x", status=JobStatus.SUBMITTED, status_since=now, last_confirmed=now)
    scheduler.jobs["1"] = job
    scheduler.lanes["b"].by_backend_id["x"] = "1"
    history = [job.status]
    for status in reports:
        before = job.status
        changed = scheduler.apply_report(job, StatusReport("x", status), "poll", None)
        if changed:
            history.append(job.status)
            assert is_legal_transition(before, job.status)
        else:
            assert job.status == before  # a refused report leaves the last good state
    changes = [e for e in events if isinstance(e, JobChanged)]
    # Every change is published, in order, and chains old -> new without a gap.
    assert [(c.old, c.new) for c in changes] == list(itertools.pairwise(history))
    rejections = [e for e in events if isinstance(e, UpdateRejected)]
    assert scheduler.counters["rejections"] == len(rejections)
    # A backend's "completed" never skips the output fetch.
    assert JobStatus.COMPLETED not in history


def test_backend_final_status_goes_through_completing(tmp_path: Path) -> None:
    scheduler, _ = _scheduler(tmp_path)
    job = Job(job_id="1", backend="b", backend_id="x", status=JobStatus.RUNNING)
    scheduler.jobs["1"] = job
    assert scheduler.apply_report(job, StatusReport("x", JobStatus.FAILED, "exit 3", 3), "poll", None)
    assert job.status == JobStatus.COMPLETING
    assert job.outcome == JobStatus.FAILED
    assert job.exit_code == 3
    # Further reports of the final status while fetching change nothing.
    assert not scheduler.apply_report(job, StatusReport("x", JobStatus.FAILED), "poll", None)
