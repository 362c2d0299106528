"""Workload generators: N jobs spread over backends, with lifetimes and outcomes."""

from __future__ import annotations

import random
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from .._model import JobSpec, JobStatus

__all__ = ["WorkloadConfig", "generate_workload", "local_command"]

_RUNS_COMMANDS = frozenset({"local", "slurm"})
"""Backends that run a real shell command (a Slurm job is ``sbatch --wrap`` of it)."""


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    """The shape of a simulated user's submission.

    ``local_share`` is the part of the jobs that run as real local processes when
    ``local`` is among the backends; the rest is spread evenly over the others.
    """

    jobs: int = 3000
    backends: tuple[str, ...] = ("local", "dirac-sim")
    local_share: float = 0.1
    mean_duration: float = 8.0
    """Mean running time of a grid job, seconds."""
    local_mean_duration: float = 2.0
    failure_rate: float = 0.1
    group_size: int = 250
    seed: int = 7


def local_command(name: str, duration: float, exit_code: int) -> tuple[str, ...]:
    """A real command that runs about ``duration`` seconds, prints, and exits with ``exit_code``."""
    script = (
        f"echo {shlex.quote(name)} starting; sleep {duration:.2f}; "
        f"echo {shlex.quote(name)} done with {exit_code}; "
        f"[ {exit_code} -eq 0 ] || echo 'simulated failure' >&2; exit {exit_code}"
    )
    return ("/bin/sh", "-c", script)


def _backend_for(index: int, config: WorkloadConfig, rng: random.Random) -> str:
    others = [name for name in config.backends if name != "local"]
    if "local" in config.backends and (not others or rng.random() < config.local_share):
        return "local"
    return others[index % len(others)]


def generate_workload(config: WorkloadConfig) -> list[JobSpec]:
    """Draw a reproducible list of jobs for ``config``.

    Each job carries the outcome it is meant to have (``expected``), so a run can be
    checked against the truth afterwards.
    """
    rng = random.Random(config.seed)
    specs = []
    for index in range(config.jobs):
        backend = _backend_for(index, config, rng)
        # Shared by the group's jobs (and kept by each for the session's life): one string, not one a job.
        group = sys.intern(f"{backend}-batch{index // config.group_size:03d}")
        name = f"{group}.{index % config.group_size}"
        fails = rng.random() < config.failure_rate
        mean = config.local_mean_duration if backend == "local" else config.mean_duration
        duration = round(rng.uniform(0.3, 1.7) * mean, 2)
        exit_code = rng.choice((1, 2, 3, 42)) if fails else 0
        specs.append(
            JobSpec(
                name=name,
                backend=backend,
                group=group,
                command=local_command(name, duration, exit_code) if backend in _RUNS_COMMANDS else (),
                duration=duration,
                exit_code=exit_code,
                expected=JobStatus.FAILED if fails else JobStatus.COMPLETED,
            )
        )
    return specs


def split_by_backend(specs: Sequence[JobSpec]) -> dict[str, list[JobSpec]]:
    """Group specs by their backend, keeping order."""
    grouped: dict[str, list[JobSpec]] = {}
    for spec in specs:
        grouped.setdefault(spec.backend, []).append(spec)
    return grouped
