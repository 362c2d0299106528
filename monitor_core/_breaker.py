"""A circuit breaker per backend lane: stop calling a backend that keeps failing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from ._events import BreakerState

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    """Stops calls to a backend that keeps failing, and tries it again now and then.

    Opens after ``threshold`` failures in a row, lets one trial call through after a pause
    that doubles each time the trial fails (up to ``reset_cap``), and closes again after a
    trial succeeds.

    Once it is open, only the trial's answer moves it. A call let through before it opened may
    still end well: a stopping service refuses new connections but answers over those already
    open. Were such an answer to close it, every waiting call would go out to be refused, and
    the breaker would flap open and shut through the outage.

    Args:
        threshold: consecutive failures that open it.
        reset_after: first pause, seconds.
        reset_cap: longest pause, seconds.
        clock: monotonic clock, seconds.
        on_change: called with the new state and a reason whenever it changes.
    """

    def __init__(
        self,
        *,
        threshold: int,
        reset_after: float,
        reset_cap: float,
        clock: Callable[[], float],
        on_change: Callable[[BreakerState, str], None],
    ) -> None:
        self.threshold = threshold
        self._base_reset = reset_after
        self._reset_cap = reset_cap
        self._reset = reset_after
        self._clock = clock
        self._on_change = on_change
        self.state: BreakerState = "closed"
        self.failures = 0
        self.opened_at: float | None = None
        self._trial_out = False
        self._changed = asyncio.Event()

    @property
    def retry_at(self) -> float | None:
        """When an open breaker lets a trial through (monotonic), or ``None``."""
        return None if self.opened_at is None else self.opened_at + self._reset

    def _set(self, state: BreakerState, reason: str) -> None:
        if state != self.state:
            self.state = state
            self._on_change(state, reason)
        self._changed.set()
        self._changed = asyncio.Event()

    async def acquire(self) -> bool:
        """Wait until a call may be made (closed, or this call is the half-open trial).

        Returns:
            Whether the call is the trial: its outcome is to be recorded with ``trial=True``.
        """
        while True:
            if self.state == "closed":
                return False
            if self.state == "open" and self.retry_at is not None and self._clock() >= self.retry_at:
                self._set("half_open", "trying one call")
            if self.state == "half_open" and not self._trial_out:
                self._trial_out = True
                return True
            changed = self._changed
            delay = None
            if self.state == "open" and self.retry_at is not None:
                delay = max(0.0, self.retry_at - self._clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await changed.wait()

    def release(self, *, trial: bool) -> None:
        """Give back the slot of a call that never happened (e.g. cancelled)."""
        if trial:
            self._trial_out = False
            self._changed.set()

    def record_success(self, *, trial: bool) -> None:
        """A call succeeded; ``trial`` as :meth:`acquire` said."""
        if self.state != "closed" and not trial:
            return  # let through before the breaker opened: not news of the service now
        self.failures = 0
        self._trial_out = False
        if self.state != "closed":
            self._reset = self._base_reset
            self.opened_at = None
            self._set("closed", "a call succeeded")

    def record_failure(self, reason: str, *, trial: bool) -> None:
        """A call failed or timed out; ``trial`` as :meth:`acquire` said."""
        self.failures += 1
        if trial:
            self._trial_out = False
            self._reset = min(self._reset * 2, self._reset_cap)
            self.opened_at = self._clock()
            self._set("open", f"trial call failed: {reason}")
        elif self.state == "closed" and self.failures >= self.threshold:
            self.opened_at = self._clock()
            self._set("open", f"{self.failures} failures in a row, last: {reason}")
