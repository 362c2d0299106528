"""Job groups over the one fold: progress (the fold's counts), usual time per status, rate and ETA, news."""

from __future__ import annotations

from array import array
from collections import Counter, deque
from typing import Final

from monitor_core import JobChanged, JobRecord, JobStatus, StateFold

from ..job_rows import GroupStats

__all__ = ["GroupsView"]

_DURATION_SAMPLES: Final = 200


class GroupsView:
    """Each group's progress and timing, and the failures and finished groups not yet announced."""

    def __init__(self, fold: StateFold) -> None:
        self._fold = fold
        self.groups: dict[str, GroupStats] = {}
        self.new_failures: list[str] = []
        """Jobs that failed since the last :meth:`take_news` call."""
        self.new_group_completions: list[str] = []
        """Groups whose last job became final since the last :meth:`take_news` call."""
        self._finished_all: deque[float] = deque(maxlen=20_000)

    def reset(self) -> None:
        """Take the fold's counts again after a snapshot; timings and completion times are kept."""
        for name, counts in self._fold.by_group.items():
            self.group(name).counts = counts
        for name in self.groups.keys() - self._fold.by_group.keys():
            del self.groups[name]

    def group(self, name: str) -> GroupStats:
        stats = self.groups.get(name)
        if stats is None:
            counts = self._fold.by_group.get(name)
            stats = self.groups[name] = GroupStats(name, counts=counts if counts is not None else Counter())
        return stats

    def added(self, record: JobRecord) -> None:
        stats = self.group(record.group)
        stats.counts = self._fold.by_group[record.group]

    def changed(self, event: JobChanged, before: JobRecord | None) -> None:
        """A job moved; ``before`` is its record as it was."""
        if before is None:
            return
        stats = self.group(before.group)
        stats.counts = self._fold.by_group[before.group]
        stats.left[before.status] += 1
        if before.status_since:
            samples = stats.durations.get(before.status)
            if samples is None:
                samples = stats.durations[before.status] = array("d")
            samples.append(max(0.0, event.at - before.status_since))
            if len(samples) > _DURATION_SAMPLES:
                del samples[0]
        if event.new.is_final and not before.status.is_final:
            stats.finished_at.append(event.at)
            self._finished_all.append(event.at)
            if event.new == JobStatus.FAILED:
                self.new_failures.append(event.job_id)
            if stats.final == stats.total:
                self.new_group_completions.append(stats.name)

    def take_news(self) -> tuple[list[str], list[str]]:
        """Failures and finished groups since the last call (for notifications)."""
        news = (self.new_failures, self.new_group_completions)
        self.new_failures, self.new_group_completions = [], []
        return news

    def overall(self) -> GroupStats:
        """Progress over every job, as one group."""
        return GroupStats("all", counts=self._fold.counts, finished_at=self._finished_all)
