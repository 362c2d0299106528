"""The scheduler's policies, shared by every lane. Times are seconds."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SchedulerConfig"]


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Policies shared by every lane. Times are seconds."""

    max_retries: int = 3
    """Retries of a failed poll before its jobs go back to waiting for their next turn."""
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    fetch_backoff_cap: float = 60.0
    fetch_max_attempts: int = 10
    """Attempts at a job's output fetch before the job is failed-to-collect (a manual retry may still collect it)."""
    fetch_limit_max: int = 64
    """Most output fetches in flight at once, however well the service keeps up."""
    timeout_multiple: float = 4.0
    """A call's timeout is this multiple of the recent p99 latency of its kind (polls, fetches), within
    ``timeout_min`` and the backend's ``call_timeout``; the backend's ``call_timeout`` until enough calls are seen."""
    timeout_min: float = 2.0
    hedge_fetches: bool = True
    """Send a second request for a fetch slower than the recent p95; the first answer wins."""
    poll_reserve_margin: float = 1.5
    """Share of the calls-per-minute allowance kept for status polls: this multiple of their expected rate."""
    local_fault_backoff: float = 2.0
    """First pause of a lane's fetches after a local disk fault (doubling, capped at ``fetch_backoff_cap``)."""
    held_push_for: float = 30.0
    """How long a backend's news about a job it has not yet been told of is held for the job's tracking."""
    breaker_threshold: int = 5
    """Failures in a row that open a lane's breaker; at least two rounds of the lane's concurrent calls."""
    breaker_reset: float = 5.0
    """First pause of an open breaker before a trial call (doubling after each failed trial)."""
    breaker_reset_cap: float = 120.0
    """Longest pause of an open breaker."""
    batch_window: float = 0.5
    """Jobs due this soon join a batch that is being formed anyway."""
    sample_every: float = 1.0
    """How often lag and health are published."""
    drain_timeout: float = 5.0
