"""Dirac jobs of a real Ganga session, on the simulated DIRAC grid, watched and driven.

Ganga's own Dirac backend submits the jobs through the stand-in DIRAC environment
(``monitor_core.sim.dirac_env``); the grid runs each job's script as a real process and
returns its output sandbox as real files. In observe mode Ganga's own loop polls and
finalises them and the bus shows its calls, finalisations and downloads; in drive mode one
bulk status call per batch goes through DIRAC's client in a subprocess worker and Ganga's own
finalisation runs as the lane's output fetch.
"""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from monitor_core import JobChanged, JobStatus, LagSampled, OpFinished, OpKind, OpQueued
from monitor_core.sim import DiracSimConfig
from monitor_core.sim.dirac_env import write_dirac_env
from monitor_core.sim.dirac_grid import DiracGridProcess

from .conftest import DiracGrid, GangaRun, GangaSession
from .helpers import fold, of_type

# Above the longest session's own bound (300 s) and its stack dump: a hung session is reported
# with every thread's stack, not cut short by the suite's timeout.
pytestmark = [pytest.mark.ganga, pytest.mark.slow, pytest.mark.timeout(420)]

SEPARATE = 3
SPLIT = 46
"""With the job that is killed, 50 Dirac jobs."""


CLIENT = textwrap.dedent(
    """
    import json, os, time
    from DIRAC.Core.Base.Script import parseCommandLine
    parseCommandLine()
    from DIRAC.Interfaces.API.Dirac import Dirac
    from DIRAC.Interfaces.API.Job import Job

    dirac = Dirac()
    job = Job()
    job.setName("stand-in")
    job.setExecutable("run.sh", "hello", "Ganga_Executable.log")
    job.setInputSandbox(["run.sh"])
    job.setOutputSandbox(["result.txt"])
    job.setCPUTime(100)
    job._addParameter(job.workflow, "GangaVersion", "JDL", "8.7.12", "")
    good = dirac.submitJob(job)["Value"]
    slow = Job()
    slow.setExecutable("sleep.sh")
    slow.setInputSandbox(["sleep.sh"])
    doomed = dirac.submitJob(slow)["Value"]
    deadline = time.time() + 30
    while time.time() < deadline:
        answer = dirac.getJobStatus([good, doomed])
        if answer["Value"][good]["Status"] == "Done" and answer["Value"][doomed]["Status"] == "Running":
            break
        time.sleep(0.1)
    killed = dirac.killJob(doomed)
    print(json.dumps({
        "status": {str(k): v for k, v in answer["Value"].items()},
        "keys_are_ints": all(isinstance(k, int) for k in answer["Value"]),
        "killed": killed,
        "after_kill": dirac.getJobStatus(doomed)["Value"][doomed]["Status"],
        "logging": dirac.getJobLoggingInfo(good)["Value"],
        "parameters": dirac.getJobParameters(good)["Value"],
        "sandbox": dirac.getOutputSandbox(good, os.getcwd() + "/out", True, True, True),
        "unknown": dirac.getJobLoggingInfo(12345),
    }))
    """
)


def test_the_stand_in_dirac_client_runs_a_job_and_returns_its_files(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "run.sh").write_text("#!/bin/sh\necho $1 from the grid\necho 42 > result.txt\n")
    (work / "sleep.sh").write_text("#!/bin/sh\nsleep 60\n")
    with DiracGridProcess(tmp_path / "grid", DiracSimConfig(latency_median=0.01, latency_sigma=0.0)) as grid:
        environment = write_dirac_env(tmp_path / "env", grid.address)
        # As Ganga runs DIRAC code: `python -` in exactly the environment of the JSON file.
        variables = json.loads(environment.env_json.read_text())
        ran = subprocess.run(
            ["python", "-"], input=CLIENT, env=variables, cwd=work, capture_output=True, text=True, timeout=60
        )
        assert ran.returncode == 0, ran.stderr
        seen = json.loads(ran.stdout)
        info = subprocess.run(
            [str(environment.directory / "bin" / "dirac-proxy-info"), "-m", "--file", str(environment.proxy)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    assert seen["keys_are_ints"]
    assert seen["killed"]["OK"]
    assert seen["after_kill"] == "Killed"
    statuses = [record[0] for record in seen["logging"]]
    assert statuses[0] == "Received"
    assert statuses[-1] == "Done"
    assert "Running" in statuses
    for record in seen["logging"]:
        datetime.datetime.strptime(record[3], "%Y-%m-%d %H:%M:%S")  # as Ganga's getStateTime reads it
    assert "NormCPUTime(s)" in seen["parameters"]
    assert seen["sandbox"]["OK"], seen["sandbox"]
    assert (work / "out" / "Ganga_Executable.log").read_text() == "hello from the grid\n"
    assert (work / "out" / "result.txt").read_text() == "42\n"
    assert not seen["unknown"]["OK"]
    # What Ganga's DiracProxy reads from the proxy tool.
    assert re.search(r"^DIRAC group\s*: ganga_user$", info, re.MULTILINE)
    assert re.search(r"^timeleft\s*: \d\d:\d\d:\d\d$", info, re.MULTILINE)
    lines = info.splitlines()
    uploaded = lines[lines.index("== Proxies uploaded ==") + 2 :][0].split("|")[-1].strip()
    datetime.datetime.strptime(uploaded, "%Y/%m/%d %H:%M")


SUBMIT = textwrap.dedent(
    """
    import json, time
    from DIRAC.Core.Base.Script import parseCommandLine
    parseCommandLine()
    from DIRAC.Interfaces.API.Dirac import Dirac
    from DIRAC.Interfaces.API.Job import Job

    dirac = Dirac()
    job = Job()
    job.setExecutable("run.sh", "", "Ganga_Executable.log")
    job.setInputSandbox(["run.sh"])
    job.setOutputSandbox(["result.txt"])
    dirac_id = dirac.submitJob(job)["Value"]
    deadline = time.time() + 30
    while dirac.getJobStatus([dirac_id])["Value"][dirac_id]["Status"] != "Done" and time.time() < deadline:
        time.sleep(0.05)
    print(json.dumps(dirac_id))
    """
)


STATES = ("running", "completing")


def test_gangas_finalisation_commands_run_in_the_lanes_dirac_client(ganga_installed: str, tmp_path: Path) -> None:
    """Ganga's own DIRAC commands, run by drive mode's command process.

    Answers come as Ganga's DIRAC executor gives them, a finished job's records are read from
    DIRAC once for all of its finalisation's commands, and its sandbox is downloaded once.
    """
    import importlib

    from monitor_core.ganga._dirac_commands import DiracCommandClient

    commands = importlib.import_module("ganga.GangaDirac.Lib.Server.DiracNewCommands")
    work = tmp_path / "work"
    work.mkdir()
    (work / "run.sh").write_text("#!/bin/sh\necho from the grid\necho 42 > result.txt\n")
    with DiracGridProcess(tmp_path / "grid", DiracSimConfig(latency_median=0.2, latency_sigma=0.0)) as grid:
        environment = write_dirac_env(tmp_path / "env", grid.address)
        variables = json.loads(environment.env_json.read_text())
        submitted = subprocess.run(
            ["python", "-"], input=SUBMIT, env=variables, cwd=work, capture_output=True, text=True, timeout=60
        )
        assert submitted.returncode == 0, submitted.stderr
        dirac_id = json.loads(submitted.stdout)
        client = DiracCommandClient(str(environment.env_json), str(environment.proxy), name="Dirac")
        try:
            client.start()
            before = grid.statistics()["calls"]
            client.prefetch([(dirac_id, True)])
            output = tmp_path / "output"
            output.mkdir()
            # Ganga's complete_dirac_job: two state times, then finished_job.
            times = [client.run(commands.getStateTime, {"id": dirac_id, "status": state}) for state in STATES]
            running, completing = (future.result(30) for future in times)
            finished = client.run(
                commands.finished_job,
                {"id": dirac_id, "outputDir": str(output), "unpack": True, "downloadSandbox": True},
            ).result(30)
            failing = client.run(commands.getStateTime, {"id": 12345, "status": "running"}).result(30)
            client.release([dirac_id])
            after = grid.statistics()["calls"]
        finally:
            client.close()
    assert running["OK"], running
    assert completing["OK"], completing
    assert isinstance(running["Value"], datetime.datetime)
    assert running["Value"] <= state_time_of(finished)
    assert finished["OK"], finished
    cpu, sandbox, _, state_time, _ = finished["Value"]
    assert cpu is not None  # NormCPUTime(s), from the job's parameters
    assert sandbox["OK"], sandbox
    assert isinstance(state_time["completed"], datetime.datetime)
    assert (output / "result.txt").read_text() == "42\n"
    assert failing == {"OK": True, "Value": None}  # DIRAC's error on an unknown job, as getStateTime words it
    asked = {method: after.get(method, 0) - before.get(method, 0) for method in after}
    # Three state times read one logging record; CPU time and output data, one parameter read.
    assert asked["getJobLoggingInfo"] == 2  # the finished job once, the unknown job once
    assert asked["getJobParameters"] == 1
    assert asked["downloadSandbox"] == 1


def echo(dirac: Any, **arguments: Any) -> dict[str, Any]:
    """A DIRAC command of this module's own, for a command process that cannot run DIRAC."""
    return {"OK": True, "Value": arguments}


def test_a_command_process_where_dirac_cannot_run_hands_back_to_gangas_executor(tmp_path: Path) -> None:
    from monitor_core.ganga._dirac_commands import DiracCommandClient

    # A DIRAC environment without DIRAC in it: the command process ends as it starts.
    env_json = tmp_path / "dirac-env.json"
    env_json.write_text(json.dumps({"PATH": "/usr/bin:/bin", "DIRACOS": "", "PYTHONPATH": str(tmp_path)}))
    client = DiracCommandClient(str(env_json), "", name="Dirac")
    try:
        errors = []
        for _ in range(6):
            with pytest.raises(Exception) as failure:  # noqa: PT011 - any failure, as long as the caller hears of it
                client.run(echo, {"id": 1}).result(30)
            errors.append(str(failure.value))
            if not client.usable:
                break
    finally:
        client.close()
    assert not client.usable, errors
    assert all("DIRAC command" in error for error in errors), errors


def state_time_of(finished: dict[str, Any]) -> datetime.datetime:
    value: datetime.datetime = finished["Value"][3]["completed"]
    return value


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
