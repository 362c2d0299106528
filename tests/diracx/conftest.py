"""A DiracX 0.7 service for the DiracX tests, started and stopped by ``scripts/diracx-local``.

DiracX and its pinned dependencies live in a virtualenv of their own (created once, cached
under ``~/.cache/ganga-monitor``); the service runs in a state directory of the test
session, so it neither disturbs nor is disturbed by a service a user runs for a demo.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

if not os.environ.get("CI"):
    pytest.importorskip("httpx", reason="the diracx extra (httpx) is not installed")

from monitor_core.backends.diracx import (
    DiracxBackend,
    admin_tokens,
    pilot_tokens,
    read_env_file,
    user_tokens,
)
from monitor_core.sim.diracx_pilots import PilotConfig, PilotFleet

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "diracx-local"


@dataclass(frozen=True)
class DiracxService:
    """The running test service."""

    state_dir: Path

    @property
    def env_file(self) -> Path:
        return self.state_dir / "env"

    @property
    def env(self) -> dict[str, str]:
        return read_env_file(self.env_file)

    @property
    def url(self) -> str:
        return self.env["DIRACX_URL"]

    def script(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), *args],
            env={**os.environ, "DIRACX_LOCAL_DIR": str(self.state_dir)},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def checked(self, *args: str) -> None:
        done = self.script(*args, timeout=180)
        assert done.returncode == 0, f"diracx-local {' '.join(args)} failed: {done.stderr[-2000:]}"

    def backend(self, **options: object) -> DiracxBackend:
        return DiracxBackend.from_env_file(self.env_file, **options)  # type: ignore[arg-type]

    def fleet(self, config: PilotConfig, **options: object) -> PilotFleet:
        env = self.env
        return PilotFleet(
            env["DIRACX_URL"],
            pilot_tokens(env),
            user_tokens(env),
            admin_tokens(env),
            config,
            **options,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="session")
def diracx_service() -> Iterator[DiracxService]:
    """Create the DiracX virtualenv (once), start DiracX and moto, and stop them afterwards."""
    service = DiracxService(Path(tempfile.mkdtemp(prefix="gm-diracx-", dir="/tmp")))
    up = service.script("up", "--fresh")
    if up.returncode != 0:
        service.script("down", timeout=120)
        shutil.rmtree(service.state_dir, ignore_errors=True)
        reason = f"scripts/diracx-local up failed (exit {up.returncode}): {up.stderr.strip()[-800:]}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield service
    finally:
        service.script("down", timeout=120)
        shutil.rmtree(service.state_dir, ignore_errors=True)


@pytest.fixture
async def backend(diracx_service: DiracxService) -> AsyncIterator[DiracxBackend]:
    made = diracx_service.backend()
    try:
        yield made
    finally:
        await made.close()
