"""SIGKILL the demo mid-run and start it again on the same state directory: nothing is lost.

The real command, twice. The simulated grid outlives the killed session (its own process
group, its address in the state directory) and the resumed session finds it again, so
every job ends final and truly stated and every output is collected exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from monitor_core import MonitorSession, SessionConfig

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
JOBS = 300


def demo(state_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ganga_tui",
        "--demo",
        "--headless",
        "--until-done",
        "--json",
        "--jobs",
        str(JOBS),
        "--mean-duration",
        "4",
        "--state-dir",
        str(state_dir),
    ]


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "D"
    yield directory
    # Whatever happened, leave no grid behind.
    with contextlib.suppress(OSError, ValueError, KeyError, psutil.Error):
        info = json.loads((directory / "grid" / "grid.json").read_text())
        process = psutil.Process(info["pid"])
        if abs(process.create_time() - info["started"]) < 0.05:
            process.kill()


@pytest.mark.slow
def test_a_killed_demo_resumes_and_loses_nothing(state_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(demo(state_dir), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    assert first.stdout is not None
    finals = 0
    deadline = time.monotonic() + 120
    for line in first.stdout:
        event = json.loads(line)
        if event["type"] == "JobChanged" and event["data"]["new"] in ("completed", "failed"):
            finals += 1
        if finals >= 40 or time.monotonic() > deadline:
            break
    assert finals >= 40, "the first run made no progress"
    first.send_signal(signal.SIGKILL)
    first.wait()
    first.stdout.close()
    grid = json.loads((state_dir / "grid" / "grid.json").read_text())
    assert psutil.pid_exists(grid["pid"]), "the grid died with the session"

    second = subprocess.run(demo(state_dir), capture_output=True, text=True, env=env, timeout=240, check=False)
    lines = [json.loads(line) for line in second.stdout.splitlines() if line.strip()]
    summary = lines[-1]
    assert summary["type"] == "Summary", second.stderr[-2000:]
    data = summary["data"]
    assert data["lost"] == [], f"{len(data['lost'])} jobs lost"
    assert data["misstated"] == []
    assert data["jobs"] == data["planned"] == JOBS
    assert data["ok"], data
    assert second.returncode == 0, second.stderr[-2000:]
    # The first snapshot of the resumed session: no dirac job given up as unknown.
    snapshot = lines[0]
    assert snapshot["type"] == "Snapshot"
    assert not [job for job in snapshot["data"]["jobs"] if job["status"] == "unknown"]
    # Every output collected, once: one directory and one record per job, no half-made attempts.
    outputs = state_dir / "outputs"
    assert sorted(p.name for p in outputs.iterdir() if not p.name.startswith(".")) == sorted(
        str(n) for n in range(1, JOBS + 1)
    )
    assert not [p for p in outputs.iterdir() if p.name.startswith(".fetch-")]
    with contextlib.closing(sqlite3.connect(state_dir / "session.sqlite")) as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT job_id) FROM outputs").fetchone() == (JOBS, JOBS)
    assert data["outputs_collected"] == JOBS
    # Once nothing is left on it, the session stops its grid.
    assert not (state_dir / "grid" / "grid.json").exists()
    assert not psutil.pid_exists(grid["pid"]) or psutil.Process(grid["pid"]).status() == psutil.STATUS_ZOMBIE


async def test_jobs_a_killed_session_never_recorded_are_submitted_on_resume(tmp_path: Path) -> None:
    config = SessionConfig(
        state_dir=tmp_path / "S", jobs=30, backends=("local",), local_mean_duration=0.2, poll_interval=0.2
    )
    async with MonitorSession(config) as first:
        assert first.scheduler is not None
        await first.scheduler.wait_all_final()
    # As if the session had been killed between submitting the last ten jobs and recording them.
    with contextlib.closing(sqlite3.connect(tmp_path / "S" / "session.sqlite")) as db:
        db.execute("DELETE FROM jobs WHERE CAST(job_id AS INTEGER) > 20")
        db.execute("DELETE FROM outputs WHERE CAST(job_id AS INTEGER) > 20")
        db.commit()
    async with MonitorSession(config) as resumed:
        assert resumed.resumed
        assert resumed.scheduler is not None
        assert len(resumed.scheduler.jobs) == 30
        await resumed.scheduler.wait_all_final()
        summary = resumed.summary()
    assert summary.ok, summary
    assert sorted(job.name for job in resumed.scheduler.jobs.values()) == sorted(
        f"local-batch000.{i}" for i in range(30)
    )
