"""One session per state directory: a second is refused, naming the first; a dead holder's lock is stale."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from monitor_core import MonitorSession, SessionConfig, StateDirectoryInUse
from monitor_core._state_lock import StateDirectoryLock

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_a_second_lock_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    first = StateDirectoryLock(tmp_path / "d")
    first.acquire()
    try:
        with pytest.raises(StateDirectoryInUse, match=f"pid {os.getpid()}"):
            StateDirectoryLock(tmp_path / "d").acquire()
    finally:
        first.release()
    again = StateDirectoryLock(tmp_path / "d")
    again.acquire()
    again.release()


def test_the_lock_of_a_killed_session_is_stale(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import sys, time
                from monitor_core._state_lock import StateDirectoryLock
                StateDirectoryLock({str(tmp_path / "d")!r}).acquire()
                print("held", flush=True)
                time.sleep(60)
            """),
        ],
        stdout=subprocess.PIPE,
        env=_env(),
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == b"held"
    with pytest.raises(StateDirectoryInUse, match=f"pid {holder.pid}"):
        StateDirectoryLock(tmp_path / "d").acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    lock = StateDirectoryLock(tmp_path / "d")
    lock.acquire()  # the file is still there; its holder is not
    assert (tmp_path / "d" / "session.lock").exists()
    lock.release()


async def test_a_second_session_changes_nothing_and_names_the_first(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    config = SessionConfig(state_dir=state_dir, jobs=20, backends=("local",), local_mean_duration=0.2)
    async with MonitorSession(config) as first:
        assert first.scheduler is not None
        with pytest.raises(StateDirectoryInUse, match=f"pid {os.getpid()}"):
            async with MonitorSession(config):
                pass
        # The refused session left the first one's lock and jobs alone.
        assert f'"pid": {os.getpid()}' in (state_dir / "session.lock").read_text()
        await first.scheduler.wait_all_final()
        assert len(first.scheduler.jobs) == 20
        assert first.summary().ok
    async with MonitorSession(config) as resumed:
        assert resumed.resumed


def test_the_real_command_refuses_a_second_session(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    lock = StateDirectoryLock(state_dir)
    lock.acquire()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "ganga_tui", "--demo", "--headless", "--jobs", "5", "--state-dir", str(state_dir)],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=60,
            check=False,
        )
    finally:
        lock.release()
    assert result.returncode != 0
    assert f"in use by the session running as pid {os.getpid()}" in result.stderr
    assert not (state_dir / "session.sqlite").exists()
