"""Slurm jobs of a real Ganga session, driven through bulk ``squeue`` queries on a real cluster.

Ganga submits the jobs itself (``sbatch`` through its ``Slurm`` backend) to the test
cluster. In drive mode their lane asks Slurm about the whole batch in one query and hands
Ganga's own update only the jobs whose state moved, so each job's status file is read when
it started or ended, not on every poll; a job cancelled behind Ganga's back, running or still
queued, is failed within the grace period instead of after Ganga's ten-minute heartbeat
timeout (or never, for a queued one).
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from monitor_core import OpKind, OpQueued

from ..slurm_cluster import SlurmCluster
from .conftest import GangaSession
from .helpers import fold, of_type

pytestmark = [pytest.mark.ganga, pytest.mark.slurm, pytest.mark.slow]

JOBS = 6


def _logging_squeue(directory: Path) -> tuple[Path, Path]:
    """An ``squeue`` that notes each call's job list before running the real one."""
    log = directory / "squeue.log"
    wrapper = directory / "squeue"
    wrapper.write_text(
        "#!/bin/sh\n"
        'ids=""; prev=""\n'
        'for arg in "$@"; do [ "$prev" = "-j" ] && ids="$arg"; prev="$arg"; done\n'
        f'echo "$ids" >> {log}\n'
        'exec squeue "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper, log


def test_slurm_jobs_are_polled_in_bulk_and_a_cancelled_one_fails_promptly(
    ganga_session: GangaSession, slurm_cluster: SlurmCluster
) -> None:
    squeue, squeue_log = _logging_squeue(ganga_session.root)
    viewer = ganga_session.attach_viewer()
    run = ganga_session.run(
        "slurm_jobs.py",
        str(JOBS),
        # Ganga's job script looks at its application every heartbeat (30 s by default).
        options=["-o[Slurm]heartbeat_frequency=1"],
        env={"SLURM_CONF": str(slurm_cluster.conf), "GM_SQUEUE": str(squeue)},
        timeout=300,
    )
    assert run.returncode == 0, run.explain()
    result = run.result
    assert result, run.explain()
    assert result["all_final"], run.explain()
    expected: dict[str, str] = result["expected"]
    registry = result["registry"]

    # Ganga's registry: right final states and exit codes, stdout where Ganga's Slurm backend puts it.
    for job_id, status in expected.items():
        assert registry[job_id]["status"] == status, (job_id, registry[job_id])
    for index in range(JOBS):
        entry = registry[str(index)]
        # Ganga's batch job script frames the application's output with banner lines.
        assert f"job-{index}" in entry["stdout"].splitlines(), (index, entry)
        assert (entry["exitcode"] == 0) == (expected[str(index)] == "completed"), entry

    # The cancelled job was running, and is failed within the grace period plus a poll or two.
    doomed = result["doomed"]
    assert doomed["was_running"], run.explain()
    assert doomed["failed_after_cancel_s"] is not None
    assert registry[doomed["id"]]["exitcode"] is None
    # So is the job cancelled while Slurm held it in the queue (Ganga alone would leave it submitted).
    assert result["held"]["was_waiting"], run.explain()
    assert registry[result["held"]["id"]]["status"] == "failed"

    # The bus and an attached viewer agree with the registry.
    assert {job_id: result["bus"][job_id]["status"] for job_id in expected} == expected
    events = viewer.finish()
    state, ended = fold(events)
    viewer_states = state.final_states()
    assert {job_id: viewer_states.get(job_id) for job_id in expected} == expected
    assert [end.reason for end in ended] == ["Ganga session ended"]

    # Polls went to Slurm in bulk: some squeue call named several of the jobs at once.
    batch_ids = set(result["batch_ids"].values())
    calls = [set(line.split(",")) for line in squeue_log.read_text().split() if line]
    assert calls, "the monitor never asked squeue"
    assert all(call <= batch_ids for call in calls)
    assert max(len(call) for call in calls) >= 3

    # Ganga's own per-job update ran only when a job moved (started, ended), not on every poll.
    polls_per_job: dict[str, int] = {}
    for queued in of_type(events, OpQueued):
        if queued.op.backend == "Slurm" and queued.op.kind == OpKind.POLL:
            for job_id in queued.op.job_ids:
                polls_per_job[job_id] = polls_per_job.get(job_id, 0) + 1
    asked: dict[str, int] = result["ganga_update_asked"]
    assert sum(polls_per_job.values()) > sum(asked.values()), (polls_per_job, asked)
    for index in range(JOBS):
        job_id = str(index)
        assert asked.get(job_id, 0) <= 4, (job_id, asked, polls_per_job.get(job_id))


def test_while_squeue_fails_gangas_status_files_still_finish_the_jobs(
    ganga_session: GangaSession, slurm_cluster: SlurmCluster
) -> None:
    broken = ganga_session.root / "squeue-broken"
    broken.write_text("#!/bin/sh\necho 'squeue: error: Unable to contact slurm controller' >&2\nexit 1\n")
    broken.chmod(broken.stat().st_mode | stat.S_IXUSR)
    run = ganga_session.run(
        "slurm_jobs.py",
        "3",
        "no-cancel",
        options=["-o[Slurm]heartbeat_frequency=1"],
        env={"SLURM_CONF": str(slurm_cluster.conf), "GM_SQUEUE": str(broken)},
        timeout=300,
    )
    assert run.returncode == 0, run.explain()
    assert run.result["all_final"], run.explain()
    expected: dict[str, str] = run.result["expected"]
    assert {job_id: run.result["registry"][job_id]["status"] for job_id in expected} == expected
    assert {job_id: run.result["bus"][job_id]["status"] for job_id in expected} == expected
    assert "Slurm could not be asked" in run.stdout + run.stderr, run.explain()
