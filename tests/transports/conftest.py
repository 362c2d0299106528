"""Fixtures of the transport tests: a real mosquitto, and real `ganga-monitor-sim` processes."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..apt import apt_install

MOSQUITTO = os.environ.get("GANGA_MONITOR_MOSQUITTO", "/usr/sbin/mosquitto")
"""The broker binary; the variable lets a test prove the fixture fails in CI when it cannot start."""
_PR_SET_PDEATHSIG = 1
MQTT_USER = "viewer"
MQTT_PASSWORD = "s3cret-pass"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _install_mosquitto() -> str | None:
    """Install Debian's mosquitto if missing; the reason it cannot be, or ``None``."""
    if Path(MOSQUITTO).exists():
        return None
    return apt_install("mosquitto", "mosquitto")


def _die_with_parent() -> None:
    """Have the kernel stop the broker if the test run is killed before its clean-up.

    The signal follows the starting *thread*, so brokers are started on the main thread only.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Broker:
    """A mosquitto process on loopback ports, restartable on the same ports."""

    directory: Path
    port: int
    auth_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def auth_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.auth_port}"

    def write_config(self) -> Path:
        passwords = self.directory / "passwords"
        if not passwords.exists():
            subprocess.run(
                ["mosquitto_passwd", "-b", "-c", str(passwords), MQTT_USER, MQTT_PASSWORD], check=True, timeout=30
            )
            passwords.chmod(0o600)
        config = self.directory / "mosquitto.conf"
        config.write_text(
            # Run as whoever runs the tests, so the broker can read files under their private tmp.
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
            "per_listener_settings true\n"
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            f"listener {self.auth_port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"password_file {passwords}\n"
            "persistence false\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n"
        )
        return config

    def start(self) -> None:
        config = self.write_config()
        log = (self.directory / "mosquitto.log").open("ab")
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(config)], stdout=log, stderr=log, preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {(self.directory / 'mosquitto.log').read_text()[-2000:]}")
            try:
                with (
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
                    socket.create_connection(("127.0.0.1", self.auth_port), timeout=0.5),
                ):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _unavailable(reason: str) -> None:
    """In CI a missing component is a failure, as with Slurm and Ganga; elsewhere a skip."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A real mosquitto (installed if missing) with an anonymous and a password listener."""
    reason = _install_mosquitto()
    if reason is not None:
        _unavailable(f"cannot install mosquitto: {reason}")
    broker = Broker(tmp_path_factory.mktemp("mosquitto"), _free_port(), _free_port())
    try:
        broker.start()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        broker.stop()
        _unavailable(f"mosquitto did not start: {exc}")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def broker(mosquitto: Broker) -> Iterator[Broker]:
    """The session's broker, made sure to be running (a test may restart it)."""
    if mosquitto.process is None or mosquitto.process.poll() is not None:
        mosquitto.start()
    yield mosquitto
    if mosquitto.process is None or mosquitto.process.poll() is not None:
        mosquitto.start()


def sim_command(*args: str) -> list[str]:
    """`ganga-monitor-sim` with a small, fast local workload, plus ``args``."""
    return [
        sys.executable,
        "-m",
        "monitor_core.sim.cli",
        "--backends",
        "local",
        "--local-mean-duration",
        "0.6",
        "--poll-interval",
        "0.2",
        "--sample-every",
        "0.2",
        "--failure-rate",
        "0.3",
        *args,
    ]


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A short private directory (socket paths are limited to 107 bytes)."""
    directory = Path(f"/tmp/gm-test-{os.getpid()}-{time.monotonic_ns()}")
    directory.mkdir(mode=0o700)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
