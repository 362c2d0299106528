"""Small pure objects that decide how many calls a lane makes: the allowance and the fetch limit."""

from __future__ import annotations

import math
from collections import deque
from typing import Final, Literal

__all__ = ["AimdLimit", "CallAllowance"]

_MINUTE: Final = 60.0

CallKind = Literal["status", "fetch"]


class AimdLimit:
    """Fetch concurrency that follows what the service sustains (additive increase, multiplicative decrease).

    The limit grows by one for each full window of answers whose latency stays within
    ``tolerance`` times the best recent latency, and shrinks by ``backoff`` on a timeout, or
    by ``latency_backoff`` when latency grows past the tolerance (the service is queueing our
    calls). Modelled on Netflix's concurrency-limits ``AIMDLimit``.

    Args:
        initial: the limit to start from.
        minimum: never below this.
        maximum: never above this.
        tolerance: latency growth, relative to the best recent latency, taken as queueing.
        backoff: factor applied on a call that timed out.
        latency_backoff: factor applied on a call slower than the tolerance.
        min_growth: seconds of growth over the best latency below which a slower call is not queueing.
    """

    def __init__(
        self,
        initial: int,
        *,
        minimum: int = 1,
        maximum: int = 64,
        tolerance: float = 2.5,
        backoff: float = 0.8,
        latency_backoff: float = 0.9,
        min_growth: float = 0.05,
    ) -> None:
        if not 1 <= minimum <= maximum:
            raise ValueError("the limit's bounds must satisfy 1 <= minimum <= maximum")
        self.minimum = minimum
        self.maximum = maximum
        self.tolerance = tolerance
        self.backoff = backoff
        self.latency_backoff = latency_backoff
        self.min_growth = min_growth
        self._limit = float(min(maximum, max(minimum, initial)))
        self._best: deque[float] = deque(maxlen=100)

    @property
    def limit(self) -> int:
        """Calls allowed in flight now."""
        return int(self._limit)

    def _baseline(self) -> float | None:
        return min(self._best) if self._best else None

    def on_success(self, latency: float, in_flight: int) -> None:
        """An answer came back after ``latency`` seconds with ``in_flight`` calls out (this one included)."""
        baseline = self._baseline()
        self._best.append(latency)
        # Growth counts only when it is also large in absolute terms: millisecond calls jitter
        # by multiples of themselves without any queueing.
        if baseline is not None and latency > self.tolerance * baseline and latency - baseline > self.min_growth:
            self._limit = max(self.minimum, self._limit * self.latency_backoff)
        elif in_flight >= self.limit:
            # Grow only when the limit was the constraint: an idle lane proves nothing.
            self._limit = min(self.maximum, self._limit + 1.0 / self._limit)

    def on_failure(self, *, timed_out: bool) -> None:
        """A call failed (the service answered with an error) or timed out.

        Only a timeout says the service is overloaded; an error it answered quickly says
        nothing about how many calls it can take (the circuit breaker deals with a service
        that keeps failing), and cutting the limit on every random error would collapse it
        under a steady error rate.
        """
        if timed_out:
            self._limit = max(self.minimum, self._limit * self.backoff)


class CallAllowance:
    """A service's calls-per-minute allowance, shared by a lane's status polls and fetches.

    Status calls may use the whole allowance; fetches only what is left after the ``reserve``
    kept for status calls, so a flood of fetches can never make a poll wait. Counting a call
    happens in the same step as the check, so callers that wait together cannot overshoot.

    Args:
        per_minute: calls allowed in any sliding minute, or ``None`` for no limit.
    """

    def __init__(self, per_minute: float | None) -> None:
        self.per_minute = per_minute
        self.reserve = 0.0
        """Calls of each minute that fetches leave to status calls."""
        self._status: deque[float] = deque()
        self._fetch: deque[float] = deque()

    def _prune(self, now: float) -> None:
        horizon = now - _MINUTE
        for times in (self._status, self._fetch):
            while times and times[0] <= horizon:
                times.popleft()

    def status_used(self, now: float) -> int:
        """Status calls counted in the minute before ``now``."""
        self._prune(now)
        return len(self._status)

    def used(self, now: float) -> int:
        """Calls counted in the minute before ``now``."""
        self._prune(now)
        return len(self._status) + len(self._fetch)

    def fetch_share(self) -> float | None:
        """Calls a minute that fetches may make, or ``None`` without a limit."""
        if self.per_minute is None:
            return None
        return max(1.0, self.per_minute - self.reserve)

    def wait_time(self, kind: CallKind, now: float) -> float:
        """Seconds until a call of this kind fits (0 when it fits now)."""
        if self.per_minute is None:
            return 0.0
        self._prune(now)
        used = len(self._status) + len(self._fetch)
        if kind == "status":
            if used < self.per_minute:
                return 0.0
            oldest = min(self._status[0] if self._status else math.inf, self._fetch[0] if self._fetch else math.inf)
            return max(0.0, oldest + _MINUTE - now)
        share = self.fetch_share()
        assert share is not None
        # Fetches may use the share, and never the last free slots of the whole allowance.
        if len(self._fetch) < share and used < self.per_minute:
            return 0.0
        waits = []
        if self._fetch and len(self._fetch) >= share:
            waits.append(self._fetch[0] + _MINUTE - now)
        if used >= self.per_minute:
            oldest = min(self._status[0] if self._status else math.inf, self._fetch[0] if self._fetch else math.inf)
            waits.append(oldest + _MINUTE - now)
        return max(0.0, max(waits, default=0.0)) + 1e-3

    def take(self, kind: CallKind, now: float) -> bool:
        """Count a call of this kind if it fits now; return whether it was counted."""
        if self.wait_time(kind, now) > 0.0:
            return False
        (self._status if kind == "status" else self._fetch).append(now)
        return True
