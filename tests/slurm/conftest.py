"""Slurm backends on the session's test cluster (see ``tests/slurm_cluster.py``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from monitor_core.backends import Capabilities
from monitor_core.backends.slurm import DEFAULT_CAPABILITIES, SbatchOptions, SlurmBackend, SlurmCommands

from ..slurm_cluster import SlurmCluster

__all__ = ["MakeSlurmBackend", "SlurmCluster", "make_slurm_backend"]


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
