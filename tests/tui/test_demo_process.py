"""``ganga-monitor-tui --demo`` as a user runs it, in a terminal: the session is a process of its own."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from ganga_tui.demo import DemoSession
from monitor_core import SessionConfig
from monitor_core.transports.unix_socket import discover_sessions

pytestmark = pytest.mark.timeout(180)

FAST = ["--latency", "20ms", "--mean-duration", "2", "--poll-interval", "0.3"]


def _drain(master: int) -> None:
    # Read what the viewer draws, so it never blocks on a full terminal.
    with contextlib.suppress(OSError):
        while os.read(master, 65536):
            pass


def _wait(predicate: object, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail("the condition never held")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_demo_session_outlives_a_crashed_viewer_and_a_new_viewer_attaches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run_dir))
    env = {**os.environ, "TERM": "xterm-256color"}
    master, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    viewer = subprocess.Popen(
        [sys.executable, "-m", "ganga_tui", "--demo", "--jobs", "30", "--state-dir", str(tmp_path / "demo"), *FAST],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=env,
        start_new_session=True,
    )
    os.close(terminal)
    threading.Thread(target=_drain, args=(master,), daemon=True).start()
    session_pid: int | None = None
    try:
        _wait(lambda: len(discover_sessions()) == 1)
        found = discover_sessions()[0]
        session_pid = found.pid
        assert session_pid != viewer.pid
        viewer.send_signal(signal.SIGKILL)  # a crash: no cleanup at all
        viewer.wait(timeout=10)
        time.sleep(0.5)
        assert _alive(session_pid), "the session outlived its viewer"
        again = subprocess.run(
            [sys.executable, "-m", "ganga_tui", "--headless", "--attach", str(found.path), "--until-done"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert "jobs 30/30 final" in again.stdout
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(viewer.pid, signal.SIGKILL)
        if session_pid is not None and _alive(session_pid):
            os.kill(session_pid, signal.SIGTERM)
            _wait(lambda: not _alive(session_pid), limit=30)
        os.close(master)
    assert not discover_sessions(), "a session stopped by its signal removes its socket"


async def test_the_demo_session_tells_each_step_of_its_start_before_it_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "run").mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    config = SessionConfig(
        state_dir=tmp_path / "steps",
        jobs=30,
        backends=("local", "dirac-sim"),
        dirac_latency=0.02,
        mean_duration=1.0,
        local_mean_duration=0.2,
        poll_interval=0.3,
    )
    session = DemoSession(config)
    steps: list[str] = []
    try:
        socket = await session.start(on_step=steps.append)
        served = [found.path for found in discover_sessions(clean_stale=False)]
    finally:
        await session.stop()
    assert socket in served
    assert steps == [
        "launching the simulated DIRAC grid",
        "launching the backends' clients",
        "preparing 30 jobs",
        "submitting 30 jobs",
    ]
    # Started again on the same state directory, it resumes the jobs instead.
    steps.clear()
    try:
        await session.start(on_step=steps.append)
    finally:
        await session.stop()
    assert steps == ["launching the simulated DIRAC grid", "launching the backends' clients", "restoring 30 jobs"]
