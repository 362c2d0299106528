"""Capped, jittered exponential backoff for reconnect loops."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays that double from ``base`` up to ``cap``, each drawn uniformly below its bound.

    Full jitter spreads the reconnects of many viewers after a broker restart, so they
    do not all knock at once.

    Args:
        base: bound of the first delay, seconds.
        cap: largest bound, seconds.
        rng: random source (seeded in tests).
    """

    def __init__(self, base: float = 0.2, cap: float = 10.0, rng: random.Random | None = None) -> None:
        if not 0 < base <= cap:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()
        self.attempt = 0
        """Failed attempts since the last success."""

    def next_delay(self) -> float:
        """The wait before the next attempt; each call counts one failure."""
        bound = min(self.cap, self.base * 2.0**self.attempt)
        self.attempt += 1
        return self.base / 2 + self._rng.uniform(0.0, bound - self.base / 2)

    def reset(self) -> None:
        """A success: start from ``base`` again."""
        self.attempt = 0
