"""Ganga's state machine, and the scheduler's use of it: only legal transitions, none lost."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor_core import (
    FINAL_STATUSES,
    TRANSITIONS,
    IllegalTransition,
    Job,
    JobChanged,
    JobStatus,
    UpdateRejected,
    check_transition,
    is_legal_transition,
)
from monitor_core._book import Activate, Deactivate, Fetch, JobBook, NotCollectable
from monitor_core._clock import Clock
from monitor_core._events import job_record
from monitor_core.backends import StatusReport

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


def _book() -> tuple[JobBook, list[object]]:
    events: list[object] = []
    book = JobBook(publish=events.append, clock=Clock())
    book.add_backend("b", fetches_output=True)
    return book, events


@settings(max_examples=300, deadline=None)
@given(reports=st.lists(statuses, max_size=12))
def test_book_applies_only_legal_transitions_and_loses_none(reports: list[JobStatus]) -> None:
    book, events = _book()
    now = time.time()
    job = Job(job_id="1", backend="b", backend_id="x", status=JobStatus.SUBMITTED, status_since=now, last_confirmed=now)
    assert book.add(job) == (Activate(job),)
    history = [job.status]
    for status in reports:
        before = job.status
        transitions = book.transitions
        effects = book.apply(job, StatusReport("x", status), "poll", None, time.time())
        if book.transitions != transitions:
            history.append(job.status)
            assert is_legal_transition(before, job.status)
            # The effect follows the move: stop polling a job that left the active statuses,
            # fetch the outputs of one that finished.
            if before.is_active and not job.status.is_active:
                assert Deactivate(job.job_id) in effects
            assert (Fetch(job) in effects) == (job.status == JobStatus.COMPLETING)
        else:
            assert job.status == before  # a refused report leaves the last good state
            assert effects == ()
    changes = [e for e in events if isinstance(e, JobChanged)]
    # Every change is published, in order, and chains old -> new without a gap.
    assert [(c.old, c.new) for c in changes] == list(itertools.pairwise(history))
    rejections = [e for e in events if isinstance(e, UpdateRejected)]
    assert book.counters["rejections"] == len(rejections)
    # A backend's "completed" never skips the output fetch.
    assert JobStatus.COMPLETED not in history
    assert book.final_count == (1 if job.status.is_final else 0)


def test_backend_final_status_goes_through_completing() -> None:
    book, _ = _book()
    job = Job(job_id="1", backend="b", backend_id="x", status=JobStatus.RUNNING)
    book.add(job)
    effects = book.apply(job, StatusReport("x", JobStatus.FAILED, "exit 3", 3), "poll", None, time.time())
    assert effects == (Deactivate("1"), Fetch(job))
    assert job.status == JobStatus.COMPLETING
    assert job.outcome == JobStatus.FAILED
    assert job.exit_code == 3
    # Further reports of the final status while fetching change nothing.
    assert book.apply(job, StatusReport("x", JobStatus.FAILED), "poll", None, time.time()) == ()


async def test_failed_collection_is_kept_for_a_retry_that_settles_it_once() -> None:
    book, events = _book()
    job = Job(job_id="1", backend="b", backend_id="x", status=JobStatus.RUNNING)
    book.add(job)
    book.apply(job, StatusReport("x", JobStatus.COMPLETED), "poll", None, time.time())
    book.collection_failed(job, "no answer within 2s (after 6 attempts)", None)
    assert (job.status, job.collect_error) == (JobStatus.FAILED, "no answer within 2s (after 6 attempts)")
    failed = [e for e in events if isinstance(e, JobChanged)][-1]
    assert (failed.old, failed.new, failed.collect_error) == (
        JobStatus.COMPLETING,
        JobStatus.FAILED,
        job.collect_error,
    )
    assert book.all_final.is_set()
    retry = book.collect_request("1")
    assert retry == Fetch(job, urgent=True)
    await book.output_collected(job, ("stdout",), None)
    await book.output_collected(job, ("stdout",), None)  # a late duplicate changes nothing
    assert (job.status, job.collect_error) == (JobStatus.COMPLETED, None)
    assert book.counters["outputs_collected"] == 1
    assert [(e.old, e.new) for e in events if isinstance(e, JobChanged)][-1] == (JobStatus.FAILED, JobStatus.COMPLETED)
    with pytest.raises(NotCollectable, match="already collected"):
        book.collect_request("1")


def test_a_failed_collection_survives_a_restart_as_retryable() -> None:
    book, _ = _book()
    job = Job(
        job_id="7",
        backend="b",
        backend_id="x",
        status=JobStatus.FAILED,
        outcome=JobStatus.COMPLETED,
        info="outputs not collected: service down",
    )
    assert book.add(job, restored=True) == ()
    assert job.collect_error == "outputs not collected: service down"
    assert book.collect_request("7").urgent
    # A failed job whose outputs were collected is not retryable.
    other = Job(job_id="8", backend="b", backend_id="y", status=JobStatus.FAILED, outcome=JobStatus.FAILED)
    book.outputs_collected["8"] = ("stdout",)
    book.add(other, restored=True)
    assert other.collect_error is None
    with pytest.raises(NotCollectable):
        book.collect_request("8")


def test_a_job_record_copies_every_field_to_its_own_name() -> None:
    job = Job(
        job_id="1",
        backend="b",
        name="n",
        group="g",
        backend_id="x",
        status=JobStatus.RUNNING,
        status_since=1.0,
        last_confirmed=2.0,
        exit_code=3,
        info="i",
        collect_error="c",
    )
    record = job_record(job, next_poll_at=5.0, poll_interval=6.0)
    for name in ("job_id", "backend", "name", "group", "backend_id", "status", "status_since", "last_confirmed"):
        assert getattr(record, name) == getattr(job, name), name
    assert (record.exit_code, record.info, record.collect_error) == (3, "i", "c")
    assert (record.next_poll_at, record.poll_interval) == (5.0, 6.0)
