"""The phases of a run, inferred from how many jobs are in each state over time.

- **submission**: jobs are still being added or are new/submitting;
- **completion burst**: jobs finish on their backends (leave ``running`` for
  ``completing`` or a final state) at half the run's peak rate or more;
- **fetch flood**: many jobs wait in ``completing`` for their outputs (at least 2% of the
  jobs, and at least 20);
- **steady**: jobs run and are polled, little else happens;
- **drained**: every job is final.

A moment belongs to the first phase in this list whose condition holds.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PHASES", "Phases", "infer_phases"]

PHASES = ("submission", "completion burst", "fetch flood", "steady", "drained")
_FINAL = ("completed", "failed", "killed")
_FINISHED = ("completing", *_FINAL)
_RATE_WINDOW = 5.0


@dataclass(frozen=True, slots=True)
class Phases:
    """Phase spans: ``(start, end, name)``, in time order, with no gaps."""

    spans: tuple[tuple[float, float, str], ...]

    def at(self, moment: float) -> str:
        """The phase at a moment (before the first span: the first phase; after: the last)."""
        if not self.spans:
            return "unknown"
        starts = [span[0] for span in self.spans]
        index = max(0, bisect.bisect_right(starts, moment) - 1)
        return self.spans[index][2]

    def durations(self) -> dict[str, float]:
        """Seconds spent in each phase."""
        totals: dict[str, float] = {}
        for start, end, name in self.spans:
            totals[name] = totals.get(name, 0.0) + (end - start)
        return totals


def infer_phases(samples: Sequence[tuple[float, dict[str, int]]], jobs: int) -> Phases:
    """Phases from ``(time, jobs per state)`` samples in time order, for a run of ``jobs`` jobs."""
    if not samples:
        return Phases(())
    times = [moment for moment, _ in samples]
    finals = [sum(counts.get(state, 0) for state in _FINAL) for _, counts in samples]
    finished = [sum(counts.get(state, 0) for state in _FINISHED) for _, counts in samples]
    rates = []
    for index, moment in enumerate(times):
        back = bisect.bisect_left(times, moment - _RATE_WINDOW)
        span = moment - times[back]
        rates.append((finished[index] - finished[back]) / span if span > 0 else 0.0)
    peak = max(rates) if rates else 0.0
    flood = max(20, jobs // 50)
    labels = []
    for (_, counts), final, rate in zip(samples, finals, rates, strict=True):
        known = sum(counts.values())
        if known < jobs or counts.get("new", 0) + counts.get("submitting", 0) > 0:
            labels.append("submission")
        elif final >= jobs:
            labels.append("drained")
        elif peak > 0 and rate >= peak / 2:
            labels.append("completion burst")
        elif counts.get("completing", 0) >= flood:
            labels.append("fetch flood")
        else:
            labels.append("steady")
    spans: list[tuple[float, float, str]] = []
    for index, label in enumerate(labels):
        end = times[index + 1] if index + 1 < len(times) else times[index]
        if spans and spans[-1][2] == label:
            spans[-1] = (spans[-1][0], end, label)
        else:
            spans.append((times[index], end, label))
    return Phases(tuple(spans))
