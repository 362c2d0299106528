"""``ganga-monitor-tui --headless`` end to end, as a user runs it: a real process."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from monitor_core.sim import DiracSimProcess
from monitor_core.transports import decode_event

pytestmark = pytest.mark.timeout(180)

FAST_DEMO = ["--latency", "20ms", "--mean-duration", "1.5", "--poll-interval", "0.5"]


def run_cli(*args: str, timeout: float = 150, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ganga_tui", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def test_until_done_finishes_every_job_and_prints_the_summary(tmp_path: Path) -> None:
    result = run_cli(
        "--demo", "--headless", "--until-done", "--jobs", "150", "--state-dir", str(tmp_path / "s"), *FAST_DEMO
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "150 of 150 planned" in result.stdout
    assert re.search(r"^\s*lost\s+0\s*$", result.stdout, re.MULTILINE)
    assert re.search(r"^\s*mis-stated\s+0\s*$", result.stdout, re.MULTILINE)
    assert re.search(r"^\s*verdict\s+OK\s*$", result.stdout, re.MULTILINE)
    assert "jobs 150/150 final" in result.stdout
    # Both lags per backend, from the events: status lag, and end to collected for the grid's outputs.
    assert re.search(r"^\s*lag dirac-sim\s+p50 [\d.]+s\s+p99 [\d.]+s\s+max", result.stdout, re.MULTILINE)
    results = re.search(r"^\s*results dirac-sim\s+p50 .*\(end to collected, (\d+) jobs\)", result.stdout, re.MULTILINE)
    assert results is not None
    assert int(results.group(1)) > 0


def test_json_lines_are_valid_wire_events_and_end_with_the_summary(tmp_path: Path) -> None:
    result = run_cli(
        "--demo", "--headless", "--json", "--until-done", "--jobs", "40", "--state-dir", str(tmp_path / "s"), *FAST_DEMO
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    events = [decode_event(line) for line in lines[:-1]]
    assert type(events[0]).__name__ == "Snapshot"
    kinds = {type(e).__name__ for e in events}
    assert {"JobChanged", "OpQueued", "OpStarted", "OpFinished", "LagSampled", "Heartbeat"} <= kinds
    assert len(events[0].jobs) == 40  # type: ignore[union-attr]
    summary = json.loads(lines[-1])
    assert summary["type"] == "Summary"
    assert summary["data"]["ok"] is True
    assert summary["data"]["jobs"] == 40


def test_json_lines_of_chosen_kinds_only_end_with_a_verdict_that_names_them(tmp_path: Path) -> None:
    result = run_cli(
        *("--demo", "--headless", "--json", "--events", "Heartbeat,SessionEnded", "--timeout", "4"),
        *("--jobs", "40", "--state-dir", str(tmp_path / "s"), *FAST_DEMO),
    )
    assert result.returncode == 3, result.stderr
    lines = result.stdout.splitlines()
    heartbeats = [decode_event(line) for line in lines[:-1]]
    assert heartbeats
    assert {type(e).__name__ for e in heartbeats} == {"Heartbeat"}
    assert sum(heartbeats[-1].jobs_by_status.values()) == 40  # type: ignore[union-attr]
    summary = json.loads(lines[-1])
    assert summary["data"] == {
        "events": ["Heartbeat", "SessionEnded"],
        "exit_code": 3,
        "reason": summary["data"]["reason"],
    }


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--demo", "--jobs", "lots"], "expected a whole number"),
        (["--demo", "--error-rate", "2"], "between 0 and 1"),
        (["--demo", "--backends", "local,lsf"], "unknown backend lsf"),
        (["--demo", "--latency", "fast"], "expected a duration"),
        (["--json"], "go with --headless"),
        (["--headless", "--json", "--events", "Hartbeat"], "no event type named Hartbeat"),
        (["--headless", "--events", "Heartbeat"], "--events goes with --headless --json"),
        (["--headless", "--json", "--events", "Heartbeat", "--until-done"], "--events does not go with"),
        ([], "no running session found"),
    ],
)
def test_bad_flags_get_a_clear_message_and_exit_2(flags: list[str], message: str, tmp_path: Path) -> None:
    # An empty runtime directory: no session to attach to, whatever else runs on this machine.
    result = run_cli(*flags, timeout=30, env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert message in result.stderr


def test_help_explains_every_flag_and_the_exit_codes() -> None:
    result = run_cli("--help", timeout=30)
    assert result.returncode == 0
    for flag in ("--demo", "--headless", "--json", "--until-done", "--jobs", "--backends", "--latency", "--error-rate"):
        assert flag in result.stdout
    assert "exit status" in result.stdout


async def test_sigkill_mid_run_then_restart_loses_nothing_and_collects_once(
    dirac_service: DiracSimProcess, tmp_path: Path
) -> None:
    # The grid outlives the session, as a real one does: the service runs beside both runs.
    await asyncio.to_thread(kill_mid_run_then_resume, dirac_service.port, tmp_path / "session")


def kill_mid_run_then_resume(port: int, state: Path) -> None:
    common = ["--demo", "--headless", "--state-dir", str(state), "--jobs", "120", "--dirac-port", str(port)]
    first = subprocess.Popen(
        [sys.executable, "-m", "ganga_tui", *common, *FAST_DEMO, "--mean-duration", "3"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    outputs = state / "outputs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        collected = [p for p in outputs.glob("*") if not p.name.startswith(".")] if outputs.is_dir() else []
        if len(collected) >= 15:
            break
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert len(collected) >= 15, "the first run must get some work done before it is killed"
    with sqlite3.connect(state / "session.sqlite") as db:
        unfinished = db.execute("SELECT COUNT(*) FROM jobs WHERE status NOT IN ('completed','failed')").fetchone()[0]
    assert unfinished > 0, "the kill must land mid-run"

    second = run_cli(*common, *FAST_DEMO, "--json", "--until-done")
    assert second.returncode == 0, second.stderr[-2000:]
    summary = json.loads(second.stdout.splitlines()[-1])["data"]
    assert summary["jobs"] == summary["planned"] == 120
    assert summary["lost"] == []
    assert summary["misstated"] == []
    with sqlite3.connect(state / "session.sqlite") as db:
        ids = [row[0] for row in db.execute("SELECT job_id FROM jobs")]
        finished = [row[0] for row in db.execute("SELECT job_id FROM jobs WHERE status IN ('completed','failed')")]
        collected_rows = [row[0] for row in db.execute("SELECT job_id FROM outputs")]
    assert len(ids) == len(set(ids)) == 120
    assert sorted(collected_rows) == sorted(finished) == sorted(ids)
    assert not list(outputs.glob(".fetch-*")), "no half-collected output is left behind"
    for job_id in ids:
        files = {p.name for p in (outputs / job_id).iterdir()}
        assert files & {"std.out", "stdout"}, f"job {job_id} has no output"


async def test_headless_never_goes_silent_when_its_subscription_ends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from ganga_tui.headless import run_headless
    from ganga_tui.wait_contract import Condition
    from monitor_core import EventBus, InProcessSource, JobStatus, OutputSink, Scheduler
    from monitor_core.backends import Capabilities

    from .fakes import ScriptedBackend, specs

    caps = Capabilities(max_batch=5, max_concurrency=2, poll_interval=0.1, call_timeout=2)
    timeline = [JobStatus.RUNNING] * 8 + [JobStatus.COMPLETED]
    backend = ScriptedBackend("local", caps=caps, timeline=timeline)
    bus = EventBus()
    out = io.StringIO()
    async with Scheduler([backend], bus=bus, outputs=OutputSink(tmp_path / "out")) as scheduler:
        await scheduler.submit(specs(10, "local"))
        source = InProcessSource(bus, scheduler)
        run = asyncio.create_task(
            run_headless(source, json_lines=False, until=Condition.parse("all:final", default="all"), stream=out)
        )
        await asyncio.sleep(0.3)
        assert source.resync(), "the subscription ends (as an overflow ends it) while jobs still run"
        code = await asyncio.wait_for(run, 60)
    assert code == 0, out.getvalue()
    assert source.resubscribed == 1
    assert "resynced from a fresh snapshot (10 jobs)" in out.getvalue()
    assert "resubscribing from a snapshot" in caplog.text
    assert "jobs 10/10 final" in out.getvalue()


async def test_lines_whose_write_was_cancelled_before_it_began_are_still_written() -> None:
    from ganga_tui.headless import _Writer

    class SlowStream(io.StringIO):
        """Holds the writer's thread on its first write, as a slow pipe does."""

        def __init__(self) -> None:
            super().__init__()
            self.release = threading.Event()

        def write(self, text: str) -> int:
            self.release.wait(10)
            return super().write(text)

    stream = SlowStream()
    writer = _Writer(stream)
    writer.buffer("first")
    first = asyncio.create_task(writer.flush())
    await asyncio.sleep(0.05)
    writer.buffer("second")
    second = asyncio.create_task(writer.flush())
    await asyncio.sleep(0.05)
    # The run's end cancels the reporter while "second" still waits for the thread.
    second.cancel()
    stream.release.set()
    await first
    await asyncio.gather(second, return_exceptions=True)
    writer.close()
    assert stream.getvalue() == "first\nsecond\n"
