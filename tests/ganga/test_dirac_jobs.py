"""Dirac jobs of a real Ganga session, on the simulated DIRAC grid, watched and driven.

Ganga's own Dirac backend submits the jobs through the stand-in DIRAC environment
(``monitor_core.sim.dirac_env``); the grid runs each job's script as a real process and
returns its output sandbox as real files. In observe mode Ganga's own loop polls and
finalises them and the bus shows its calls, finalisations and downloads; in drive mode one
bulk status call per batch goes through DIRAC's client in a subprocess worker and Ganga's own
finalisation runs as the lane's output fetch.
"""

from __future__ import annotations

from typing import Any

import pytest

from monitor_core import JobChanged, JobStatus, LagSampled, OpFinished, OpKind, OpQueued

from .conftest import DiracGrid, GangaRun, GangaSession
from .helpers import fold, of_type

pytestmark = [pytest.mark.ganga, pytest.mark.slow]

SEPARATE = 3
SPLIT = 46
"""With the job that is killed, 50 Dirac jobs."""


def _check_outcome(run: GangaRun, grid: DiracGrid) -> dict[str, Any]:
    """Ganga's registry, the bus and the grid agree; each finished job's output was downloaded once."""
    assert run.returncode == 0, run.explain()
    result = run.result
    assert result, run.explain()
    assert result["all_final"], run.explain()
    expected: dict[str, str] = result["expected"]
    registry = result["registry"]
    assert {job_id: registry[job_id]["status"] for job_id in expected} == expected
    assert {job_id: result["bus"][job_id]["status"] for job_id in expected} == expected
    for job_id, entry in registry.items():
        if job_id not in expected:  # a split job: settled from its subjobs, on the bus too
            assert result["bus"][job_id]["status"] == entry["status"], (job_id, entry)
    downloads = grid.process.statistics()["sandbox_downloads"]
    for job_id, status in expected.items():
        dirac_id = str(result["dirac_ids"][job_id])
        if status == "killed":
            continue
        assert downloads.get(dirac_id) == 1, (job_id, dirac_id, downloads.get(dirac_id))
        if status == "completed":
            # The output sandbox's log, where Ganga's Dirac backend links stdout to.
            stdout = registry[job_id]["stdout"] or ""
            assert "job-" in stdout, (job_id, stdout)
    return result


@pytest.mark.parametrize("mode", ["observe", "drive"])
def test_fifty_dirac_jobs(ganga_session: GangaSession, dirac_grid: DiracGrid, mode: str) -> None:
    viewer = ganga_session.attach_viewer()
    run = ganga_session.run(
        "dirac_jobs.py",
        mode,
        str(SEPARATE),
        f"split={SPLIT}",
        options=dirac_grid.options(poll=1.0),
        env={**dirac_grid.env(), "GM_POLL": "1"},
        timeout=240,
    )
    result = _check_outcome(run, dirac_grid)
    expected: dict[str, str] = result["expected"]
    assert len(expected) == 50
    assert sorted(set(expected.values())) == ["completed", "failed", "killed"]
    assert list(expected.values()).count("killed") == 1
    assert result["doomed_was_running"], run.explain()

    events = viewer.finish()
    state, ended = fold(events)
    viewer_states = state.final_states()
    assert {job_id: viewer_states.get(job_id) for job_id in expected} == expected
    assert [end.reason for end in ended] == ["Ganga session ended"]

    queued = [event.op for event in of_type(events, OpQueued) if event.op.backend == "Dirac"]
    polls = [op for op in queued if op.kind == OpKind.POLL]
    fetches = [op for op in queued if op.kind == OpKind.FETCH_OUTPUT]
    finished_jobs = {job_id for job_id, status in expected.items() if status != "killed"}
    assert polls, "no Dirac status call on the bus"
    # Every finished job's finalisation (its output download) is an operation with a latency.
    assert finished_jobs <= {job_id for op in fetches for job_id in op.job_ids}
    fetch_ends = [e for e in of_type(events, OpFinished) if e.backend == "Dirac" and e.kind == OpKind.FETCH_OUTPUT]
    assert fetch_ends
    assert all(e.latency is not None and e.latency >= 0 for e in fetch_ends)
    samples = [e.backend for e in of_type(events, LagSampled) if e.backend.name == "Dirac"]
    assert samples
    if mode == "observe":
        # Ganga's own delay from starting a finalisation to the job's outcome.
        assert max(sample.results_lag for sample in samples) > 0
    else:
        # One status call asks about many jobs at once.
        assert max(len(op.job_ids) for op in polls) >= 10


def test_split_job_subjobs_finish_while_the_master_still_submits(
    ganga_session: GangaSession, dirac_grid: DiracGrid
) -> None:
    viewer = ganga_session.attach_viewer()
    run = ganga_session.run(
        "dirac_jobs.py",
        "drive",
        "0",
        "split=200",
        "nokill",
        # Ganga submits a split job's subjobs in blocks, one DIRAC process per block.
        options=[*dirac_grid.options(poll=1.0), "-o[DIRAC]maxSubjobsPerProcess=50"],
        env={**dirac_grid.env(), "GM_POLL": "0.5"},
        timeout=300,
    )
    result = _check_outcome(run, dirac_grid)
    events = viewer.finish()
    changes = [event for event in of_type(events, JobChanged) if "." in event.job_id]
    last_submitted = max(event.at for event in changes if event.new == JobStatus.SUBMITTED)
    first_completed = min(event.at for event in changes if event.new == JobStatus.COMPLETED)
    completed_early = {
        event.job_id for event in changes if event.new == JobStatus.COMPLETED and event.at < last_submitted
    }
    assert first_completed < last_submitted, "no subjob completed while the master was still submitting"
    assert len(completed_early) >= 10, completed_early
    assert len(result["expected"]) == 200


def test_a_hung_then_failing_service_loses_nothing(ganga_session: GangaSession, dirac_grid: DiracGrid) -> None:
    viewer = ganga_session.attach_viewer()
    run = ganga_session.run(
        "dirac_jobs.py",
        "drive",
        "3",
        "split=12",
        "fault=hang,error",
        "fault_for=6",
        "hang_seconds=8",
        "timeout=3",
        options=dirac_grid.options(poll=1.0),
        env={**dirac_grid.env(), "GM_POLL": "1"},
        timeout=240,
    )
    result = _check_outcome(run, dirac_grid)
    faults = result["service"]["faults"]
    assert faults.get("hang", 0) > 0, faults
    assert faults.get("error", 0) > 0, faults
    events = viewer.finish()
    state, _ = fold(events)
    viewer_states = state.final_states()
    assert {job_id: viewer_states.get(job_id) for job_id in result["expected"]} == result["expected"]
    failed_calls = [
        e for e in of_type(events, OpFinished) if e.backend == "Dirac" and e.kind == OpKind.POLL and e.outcome != "done"
    ]
    assert failed_calls, "the lane never saw the service fail"
