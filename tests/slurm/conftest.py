"""A one-node Slurm cluster for the whole test session, started and stopped by ``scripts/slurm-local``.

The cluster lives in a state directory of its own, so it neither disturbs nor is disturbed
by a cluster a user runs for a demo.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from monitor_core.backends import Capabilities
from monitor_core.backends.slurm import DEFAULT_CAPABILITIES, SbatchOptions, SlurmBackend, SlurmCommands

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "slurm-local"


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


MakeSlurmBackend = Callable[..., SlurmBackend]


@pytest.fixture
def make_slurm_backend(slurm_cluster: SlurmCluster, tmp_path: Path) -> MakeSlurmBackend:
    """Backends on the test cluster, with fast polling unless told otherwise."""

    def make(
        *,
        name: str = "slurm",
        capabilities: Capabilities | None = None,
        options_for: SbatchOptions | None = None,
        **commands: str,
    ) -> SlurmBackend:
        return SlurmBackend(
            tmp_path / f"{name}-work",
            name=name,
            commands=SlurmCommands(slurm_conf=slurm_cluster.conf, **commands),  # type: ignore[arg-type]
            capabilities=capabilities or replace(DEFAULT_CAPABILITIES, poll_interval=1.0),
            options_for=options_for,
        )

    return make
