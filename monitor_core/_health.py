"""A lane's health: calls in the last minute, outcomes, latency quantiles and lag samples.

Shared by the scheduler's lanes and by observe mode, which watches Ganga's own loop make
the calls: both publish the same figures, computed the same way.
"""

from __future__ import annotations

from collections import deque
from typing import Final

__all__ = ["LaneHealth", "LatencyWindow"]

_MINUTE: Final = 60.0


class LatencyWindow:
    """The latest ``size`` latencies of one kind of call, and their quantiles.

    Quantiles are cached until the next sample, since a lane asks for them once per call.
    """

    __slots__ = ("_sorted", "_values")

    def __init__(self, size: int = 200) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._sorted: list[float] | None = None

    def __len__(self) -> int:
        return len(self._values)

    def add(self, seconds: float) -> None:
        """Record one call's latency."""
        self._values.append(seconds)
        self._sorted = None

    def quantile(self, fraction: float) -> float | None:
        """The ``fraction`` quantile (nearest rank), or ``None`` with no samples."""
        if not self._values:
            return None
        if self._sorted is None:
            self._sorted = sorted(self._values)
        ordered = self._sorted
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class LaneHealth:
    """Counters and recent history of one lane's calls (times are seconds on one clock)."""

    def __init__(self, outcomes_kept: int = 50, lag_samples_kept: int = 100_000) -> None:
        self.calls_total = 0
        self.retries_total = 0
        self.rejections_total = 0
        self.fetches_total = 0
        self.last_latency: float | None = None
        self.call_times: deque[float] = deque()
        """Start times of the calls of the last minute (pruned when read)."""
        self.outcomes: deque[bool] = deque(maxlen=outcomes_kept)
        self.lag_samples: deque[float] = deque(maxlen=lag_samples_kept)
        """Status lag, one sample per publication."""
        self.results_lag_samples: deque[float] = deque(maxlen=lag_samples_kept)
        """Results lag, one sample per publication."""
        self.poll_latency = LatencyWindow()
        self.fetch_latency = LatencyWindow()

    def call_started(self, now: float) -> None:
        """A call went out at ``now``."""
        self.calls_total += 1
        self.call_times.append(now)

    def call_finished(self, latency: float, ok: bool | None) -> None:
        """A call ended; ``ok`` is ``None`` for a call cut short by shutdown (no verdict on the backend)."""
        self.last_latency = latency
        if ok is not None:
            self.outcomes.append(ok)

    def calls_per_minute(self, now: float) -> float:
        """Calls started in the minute before ``now``."""
        times = self.call_times
        while times and times[0] < now - _MINUTE:
            times.popleft()
        return float(len(times))

    @property
    def error_rate(self) -> float:
        """Share of the recent calls that failed or timed out."""
        outcomes = self.outcomes
        return outcomes.count(False) / len(outcomes) if outcomes else 0.0
