"""A real Ganga 8.7.12 session per test, started headless by the test set-up.

The `ganga` extra is installed when missing. Each session gets its own scratch HOME, an
empty config file (without one Ganga stops to ask about creating ``~/.gangarc``), its own
gangadir and a short socket path. Viewer processes attach over that socket.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from monitor_core import Event
from monitor_core.sim import DiracSimConfig
from monitor_core.sim.dirac_env import DiracEnvironment, write_dirac_env
from monitor_core.sim.dirac_grid import DiracGridProcess
from monitor_core.transports import decode_event

GANGA_VERSION = "8.7.12"
SCRIPTS = Path(__file__).parent / "scripts"
REPO = Path(__file__).resolve().parents[2]


DIRAC_EXTRA = ("UltraDict", "six")
"""What Ganga's Dirac plugin needs beyond Ganga itself (Ganga's own `dirac` extra, and six)."""


def _ganga_ready() -> bool:
    try:
        if importlib.metadata.version("ganga") != GANGA_VERSION or shutil.which("ganga") is None:
            return False
        for name in DIRAC_EXTRA:
            importlib.metadata.version(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.fixture(scope="session")
def ganga_installed() -> str:
    """The ``ganga`` launcher, installing the `ganga` extra (``ganga[dirac]==8.7.12``, ``six``) when missing."""
    if not _ganga_ready():
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", f"ganga[dirac]=={GANGA_VERSION}", *DIRAC_EXTRA],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if result.returncode != 0 or not _ganga_ready():
            reason = f"Ganga {GANGA_VERSION} could not be installed: {(result.stderr or result.stdout)[-800:]}"
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)
    launcher = shutil.which("ganga")
    assert launcher is not None
    return launcher


@dataclass
class GangaRun:
    """A finished Ganga session: its exit status, output, and what its script wrote."""

    returncode: int
    stdout: str
    stderr: str
    result: dict[str, Any]

    def explain(self) -> str:
        return f"exit {self.returncode}\n--- stdout ---\n{self.stdout[-6000:]}\n--- stderr ---\n{self.stderr[-4000:]}"


@dataclass
class Viewer:
    """A viewer process attached over the session's socket, recording every event."""

    process: subprocess.Popen[bytes]
    out: Path

    def finish(self, timeout: float = 60.0) -> list[Event | dict[str, Any]]:
        self.process.wait(timeout=timeout)
        errors = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
        assert self.process.returncode == 0, f"viewer exit {self.process.returncode}: {errors[-2000:]}"
        events: list[Event | dict[str, Any]] = []
        for line in self.out.read_bytes().splitlines():
            data = json.loads(line)
            events.append(data if data.get("type") == "ConnectionChanged" else decode_event(line))
        return events


@dataclass
class GangaSession:
    """Runs scripts in headless Ganga sessions inside one scratch directory."""

    launcher: str
    root: Path
    socket: Path
    options: list[str] = field(default_factory=list)
    viewers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.root / "home"

    def command(self, script: str, args: Sequence[str], options: Sequence[str]) -> list[str]:
        config = self.root / "empty.ini"
        config.touch()
        return [
            self.launcher,
            "--no-prompt",
            f"--config={config}",
            f"-o[Configuration]gangadir={self.root / 'gangadir'}",
            "-o[PollThread]autostart=True",
            *self.options,
            *options,
            str(SCRIPTS / script),
            *args,
        ]

    def attach_viewer(self, sessions: int = 1, timeout: float = 180.0) -> Viewer:
        out = self.root / f"viewer-{len(self.viewers)}.jsonl"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.ganga.viewer",
                str(self.socket),
                str(out),
                "--sessions",
                str(sessions),
                "--timeout",
                str(timeout),
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.viewers.append(process)
        return Viewer(process, out)

    def run(
        self,
        script: str,
        *args: str,
        options: Sequence[str] = (),
        startup: str | None = None,
        timeout: float = 180,
        env: Mapping[str, str] | None = None,
    ) -> GangaRun:
        """Run ``script`` (from tests/ganga/scripts) in a fresh headless Ganga session and wait for its end.

        ``startup`` becomes the session's ``~/.ganga.py``; ``env`` adds to its environment. The
        script gets the socket path and a result file in ``GM_SOCKET`` and ``GM_RESULT``, and
        writes its findings as JSON there.
        """
        self.home.mkdir(exist_ok=True)
        startup_file = self.home / ".ganga.py"
        if startup is not None:
            startup_file.write_text(startup)
        elif startup_file.exists():
            startup_file.unlink()
        result_file = self.root / "result.json"
        result_file.unlink(missing_ok=True)
        environment = {
            **os.environ,
            **(env or {}),
            "HOME": str(self.home),
            "GM_SOCKET": str(self.socket),
            "GM_RESULT": str(result_file),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(SCRIPTS), os.environ.get("PYTHONPATH")])),
            # A session that hangs is sent SIGABRT: every thread's stack then goes to its stderr.
            "PYTHONFAULTHANDLER": "1",
        }
        with subprocess.Popen(
            self.command(script, args, options),
            cwd=self.root,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as process:
            try:
                stdout, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGABRT)
                try:
                    stdout, stderr = process.communicate(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    stdout, stderr = process.communicate()
                pytest.fail(
                    f"Ganga did not end within {timeout:.0f}s; its output ends:\n{stdout[-4000:]}\n"
                    f"its threads when stopped (stderr):\n{stderr[-12000:]}"
                )
        result = json.loads(result_file.read_text()) if result_file.exists() else {}
        return GangaRun(process.returncode, stdout, stderr, result)


@pytest.fixture
def ganga_session(ganga_installed: str) -> Iterator[GangaSession]:
    """A scratch directory for headless Ganga sessions; viewers left running are stopped after."""
    # Short: a Unix socket path must fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="gm-", dir="/tmp"))
    session = GangaSession(ganga_installed, root, root / "s.sock")
    try:
        yield session
    finally:
        for viewer in session.viewers:
            if viewer.poll() is None:
                viewer.kill()
                viewer.wait()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class DiracGrid:
    """The simulated DIRAC grid and a DIRAC environment for Ganga pointing at it."""

    process: DiracGridProcess
    environment: DiracEnvironment

    def options(self, poll: float = 1.0) -> list[str]:
        """Ganga options using the grid, with Ganga's own Dirac poll rate."""
        return [*self.environment.options, f"-o[PollThread]Dirac={poll:g}"]

    def env(self) -> dict[str, str]:
        """Environment variables for the Ganga session (its proxy, the service's address)."""
        return {**self.environment.environment, "GM_DIRAC_SERVICE": self.process.address}


@pytest.fixture
def dirac_grid(ganga_session: GangaSession) -> Iterator[DiracGrid]:
    """A simulated DIRAC grid running real jobs, started for the test and stopped after."""
    process = DiracGridProcess(
        ganga_session.root / "grid",
        DiracSimConfig(latency_median=0.1, latency_sigma=0.1, output_latency=0.05),
        log=ganga_session.root / "grid.log",
    )
    try:
        address = process.start()
    except (RuntimeError, OSError) as exc:
        reason = f"the simulated DIRAC grid did not start: {exc}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield DiracGrid(process, write_dirac_env(ganga_session.root / "dirac", address))
    finally:
        process.stop()
