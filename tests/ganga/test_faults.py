"""Ganga's monitoring faults: two backends activated at once, and a backend whose call raises or hangs."""

from __future__ import annotations

import pytest

from monitor_core import BreakerChanged, LagSampled, OpFinished, OpStarted

from .conftest import GangaSession
from .helpers import fold, of_type

pytestmark = [pytest.mark.ganga, pytest.mark.slow]

FINAL = {"completed", "failed", "killed"}


def test_two_backends_activated_together(ganga_session: GangaSession) -> None:
    viewer = ganga_session.attach_viewer(sessions=2)
    run = ganga_session.run(
        "two_backends.py", options=["-o[PollThread]Local=1", "-o[PollThread]default_backend_poll_rate=1"]
    )
    assert run.returncode == 0, run.explain()
    result = run.result
    assert result, run.explain()
    local_a, interactive_a = result["ids"]["first"]

    # Under Ganga's own loop, one of the two backends is never polled (Ganga 8.7.12's scan keeps
    # the last job's backend for every newly active backend). The bus shows it: active jobs,
    # no calls, and a lag past Ganga's own poll rate.
    observed = result["observed"]
    stuck = [job_id for job_id, entry in observed["registry"].items() if entry["status"] not in FINAL]
    assert len(stuck) == 1, observed
    stuck_backend = "Local" if stuck == [local_a] else "Interactive"
    assert observed["bus"][stuck[0]]["status"] in ("submitted", "running")
    assert observed["backends"][stuck_backend]["calls"] == 0
    assert observed["backends"][stuck_backend]["lag"] > 0

    events = viewer.finish()
    first, ended = fold(events, upto_session=1)
    assert [end.reason for end in ended] == ["monitor stopped"]
    assert first.jobs[stuck[0]].status in ("submitted", "running")
    assert first.backends[stuck_backend].lag > 0
    samples = [e for e in of_type(events, LagSampled) if e.backend.name == stuck_backend and e.backend.active_jobs]
    assert samples
    assert max(sample.backend.lag for sample in samples) > 0

    # Drive mode polls both: the job Ganga forgot, and a second pair submitted together.
    assert result["driven_final"], run.explain()
    for job_id, entry in result["registry"].items():
        assert entry["status"] == "completed", (job_id, entry)
        assert result["bus"][job_id]["status"] == "completed"
    assert result["registry"][interactive_a]["stdout"] == "a\n"
    both, ended = fold(events, upto_session=2)
    assert [end.reason for end in ended] == ["monitor stopped", "Ganga session ended"]
    assert all(record.status == "completed" for record in both.jobs.values())
    polled = {event.backend for event in of_type(events, OpStarted)}
    assert {"Local", "Interactive"} <= polled


def test_failing_and_hanging_backend_is_isolated(ganga_session: GangaSession) -> None:
    viewer = ganga_session.attach_viewer()
    run = ganga_session.run("faulty_backend.py")
    assert run.returncode == 0, run.explain()
    result = run.result
    assert result, run.explain()

    # Local jobs went on, and the session stayed usable, while Interactive's calls failed.
    assert result["locals_final"], run.explain()
    assert result["late_final"], run.explain()
    assert result["table_mentions_troubled"]
    assert result["faulty_calls"] >= 6
    # No job stuck for good: the troubled job completed once its backend answered again.
    assert result["troubled_final"], run.explain()
    for job_id, entry in result["registry"].items():
        assert result["bus"][job_id]["status"] == entry["status"], job_id
    assert result["registry"][result["troubled_id"]]["status"] == "completed"

    events = viewer.finish()
    interactive = [event for event in of_type(events, OpFinished) if event.backend == "Interactive"]
    outcomes = {event.outcome for event in interactive}
    assert {"error", "timeout", "done"} <= outcomes, outcomes
    assert any(event.retry_in is not None for event in interactive), "failed calls are retried after a backoff"
    breaker = [event.state for event in of_type(events, BreakerChanged) if event.backend == "Interactive"]
    assert "open" in breaker, breaker
    assert breaker[-1] == "closed", breaker
    assert any(e.backend.name == "Interactive" and e.backend.breaker == "open" for e in of_type(events, LagSampled))
    local_outcomes = {event.outcome for event in of_type(events, OpFinished) if event.backend == "Local"}
    assert local_outcomes == {"done"}
    state, ended = fold(events)
    assert [end.reason for end in ended] == ["Ganga session ended"]
    assert state.jobs[result["troubled_id"]].status == "completed"
