"""Adaptive poll intervals and retry backoff: small pure functions of a job's recent life."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ._model import Job, JobStatus

__all__ = ["AdaptiveInterval", "GroupRuntimes", "backoff_delay"]


@dataclass(slots=True)
class GroupRuntimes:
    """Running mean of how long a group's jobs ran, to see a job nearing its end."""

    count: int = 0
    mean: float = 0.0

    def add(self, seconds: float) -> None:
        """Record one more job's running time."""
        self.count += 1
        self.mean += (seconds - self.mean) / self.count


@dataclass(frozen=True, slots=True)
class AdaptiveInterval:
    """Chooses how soon a job's status is worth asking for again.

    Fresh submissions fail or start quickly, and a running job that has run about as long
    as its group's finished jobs is about to end: both are polled ``fast`` times more often.
    A job whose status has not moved for ``idle_after`` intervals is polled ``slow`` times
    less often. The result stays within ``[base / fast, base * slow]``.
    """

    fast: float = 2.0
    slow: float = 2.0
    fresh_for: float = 2.0
    """In intervals: how long a submitted job counts as fresh."""
    near_end: float = 0.8
    """Share of the group's mean running time past which a job counts as nearly done."""
    idle_after: float = 6.0

    def interval(self, job: Job, base: float, now: float, group: GroupRuntimes | None) -> float:
        """Seconds until ``job`` should be confirmed again (``now`` is wall-clock time)."""
        in_status = now - job.status_since
        if job.status == JobStatus.SUBMITTED and in_status < self.fresh_for * base:
            return base / self.fast
        if (
            job.status == JobStatus.RUNNING
            and group is not None
            and group.count >= 3
            and in_status >= self.near_end * group.mean
        ):
            return base / self.fast
        if in_status > self.idle_after * base:
            return base * self.slow
        return base


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff before retry number ``attempt`` (1 = first retry)."""
    ceiling = min(cap, base * 2.0 ** (attempt - 1))
    return (rng or random).uniform(ceiling / 2, ceiling)
