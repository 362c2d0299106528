"""Fifty Local jobs in a real Ganga session, in observe mode and in drive mode.

Each job must reach its right final state in Ganga's registry and on the bus, have its
stdout in Ganga's output directory, and a viewer process attached over the socket must end
with the same states and see the session end.
"""

from __future__ import annotations

import itertools

import pytest

from monitor_core import JobChanged, OpFinished, OpStarted

from .conftest import GangaSession
from .helpers import fold, of_type

pytestmark = [pytest.mark.ganga, pytest.mark.slow]

JOBS = 50

STARTUP = """
import os
from monitor_core.ganga import start_monitor
start_monitor(socket_path=os.environ["GM_SOCKET"])
"""


def _check_session(
    session: GangaSession, mode: str, how: str, options: list[str], startup: str | None, split: bool
) -> None:
    viewer = session.attach_viewer()
    args = [how, str(JOBS)] + (["split"] if split else [])
    run = session.run("local_jobs.py", *args, options=options, startup=startup)
    assert run.returncode == 0, run.explain()
    result = run.result
    assert result, run.explain()
    assert result["all_final"], run.explain()
    assert result["mode"] == mode
    expected: dict[str, str] = result["expected"]
    registry = result["registry"]

    # Ganga's registry: the right final state, the right exit code, the stdout in Ganga's output directory.
    for job_id, status in expected.items():
        assert registry[job_id]["status"] == status, (job_id, registry[job_id])
    for index in range(JOBS):
        entry = registry[str(index)]
        assert entry["stdout"] == f"job-{index}\n", (index, entry)
        assert entry["exitcode"] == (0 if expected[str(index)] == "completed" else entry["exitcode"])
        assert (entry["exitcode"] == 0) == (expected[str(index)] == "completed"), entry

    # The bus in the session agrees with the registry.
    bus = result["bus"]
    assert {job_id: bus[job_id]["status"] for job_id in expected} == expected

    # So does a viewer in another process, attached over the socket; and it saw the session end.
    events = viewer.finish()
    state, ended = fold(events)
    assert [end.reason for end in ended] == ["Ganga session ended"]
    viewer_states = state.final_states()
    assert {job_id: viewer_states.get(job_id) for job_id in expected} == expected
    for index in range(JOBS):
        record = state.jobs[str(index)]
        assert record.backend == "Local"
        assert record.exit_code == registry[str(index)]["exitcode"]

    # Every job's transitions arrived, in Ganga's order.
    changes = of_type(events, JobChanged)
    for index in range(JOBS):
        path = [(change.old, change.new) for change in changes if change.job_id == str(index)]
        assert path[0] == ("new", "submitting"), path
        assert path[-1][1] == expected[str(index)], path
        for (_, reached), (left, _) in itertools.pairwise(path):
            assert reached == left, path
    if split:
        # Ganga's auto-resubmit policy ran: the flaky subjob failed once, was resubmitted, completed.
        assert sorted(result["split_submit_counters"]) == [1, 1, 1, 1, 2]
        flaky = [(c.old, c.new) for c in changes if c.job_id == f"{JOBS}.4"]
        left_failed = [new for old, new in flaky if old == "failed"]
        assert left_failed, flaky
        assert left_failed[0] in ("submitting", "submitted"), flaky
        assert flaky[-1][1] == "completed", flaky
    # Monitoring calls were shown as operations of the Local backend.
    finished = [event for event in of_type(events, OpFinished) if event.backend == "Local"]
    assert finished
    assert of_type(events, OpStarted)
    assert sum(event.changed for event in finished) > 0


def test_observe_mode_mirrors_gangas_own_monitoring(ganga_session: GangaSession) -> None:
    # Ganga's own loop does the monitoring, set to poll Local every 2 s to keep the test short;
    # the monitor is started from the user's startup file, its mode taken from Ganga's config.
    _check_session(
        ganga_session,
        "observe",
        "startup",
        ["-o[PollThread]Local=2", "-o[GangaMonitor]mode=observe"],
        STARTUP,
        split=False,
    )


def test_drive_mode_completes_jobs_through_gangas_own_path(ganga_session: GangaSession) -> None:
    # Drive mode chosen by the config option; a split job's flaky subjob needs Ganga's auto-resubmit.
    _check_session(ganga_session, "drive", "startup", ["-o[GangaMonitor]mode=drive"], STARTUP, split=True)
