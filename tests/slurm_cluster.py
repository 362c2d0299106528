"""A one-node Slurm cluster for the whole test session, started and stopped by ``scripts/slurm-local``.

The cluster lives in a state directory of its own, so it neither disturbs nor is disturbed
by a cluster a user runs for a demo. Registered as a plugin by ``tests/conftest.py``, so the
Slurm tests and the Ganga tests share one cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slurm-local"


@dataclass(frozen=True)
class SlurmCluster:
    """The running test cluster."""

    state_dir: Path

    @property
    def conf(self) -> Path:
        return self.state_dir / "etc" / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_LOCAL_DIR": str(self.state_dir), "SLURM_CONF": str(self.conf)}

    def script(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def checked(self, *args: str) -> None:
        done = self.script(*args, timeout=120)
        assert done.returncode == 0, f"slurm-local {' '.join(args)} failed: {done.stderr[-2000:]}"


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """Install (as root, when missing), start, and afterwards stop a one-node Slurm cluster."""
    # The munge socket path must stay under 100 bytes, so the directory lives directly in /tmp.
    cluster = SlurmCluster(Path(tempfile.mkdtemp(prefix="gm-slurm-", dir="/tmp")))
    up = cluster.script("up", "--fresh")
    if up.returncode != 0:
        cluster.script("down", timeout=120)
        shutil.rmtree(cluster.state_dir, ignore_errors=True)
        reason = f"scripts/slurm-local up failed (exit {up.returncode}): {up.stderr.strip()[-800:]}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield cluster
    finally:
        cluster.script("down", timeout=180)
        shutil.rmtree(cluster.state_dir, ignore_errors=True)
