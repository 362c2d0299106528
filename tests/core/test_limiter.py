"""The pure pieces that decide how many calls a lane makes, and in what order it fetches."""

from __future__ import annotations

import pytest

from monitor_core import Job
from monitor_core._clock import Clock
from monitor_core._collecting import FetchQueue
from monitor_core._health import LaneHealth, LatencyWindow
from monitor_core._limiter import AimdLimit, CallAllowance


def test_aimd_grows_while_latency_holds_and_the_limit_binds() -> None:
    limit = AimdLimit(2, maximum=10)
    for _ in range(200):
        limit.on_success(0.1, in_flight=limit.limit)
    assert limit.limit == 10
    # An idle lane (fewer in flight than the limit) proves nothing: no growth.
    idle = AimdLimit(2, maximum=10)
    for _ in range(200):
        idle.on_success(0.1, in_flight=1)
    assert idle.limit == 2


def test_aimd_backs_off_on_timeouts_and_on_latency_growth_within_bounds() -> None:
    limit = AimdLimit(16, minimum=2, maximum=32)
    limit.on_failure(timed_out=False)
    assert limit.limit == 16, "an error the service answered says nothing of its load"
    limit.on_failure(timed_out=True)
    assert limit.limit == 12
    for _ in range(20):
        limit.on_failure(timed_out=True)
    assert limit.limit == 2
    queued = AimdLimit(16, maximum=32)
    queued.on_success(0.1, in_flight=16)
    for _ in range(5):
        queued.on_success(1.0, in_flight=16)  # ten times the best latency: the service queues
    assert queued.limit < 16
    with pytest.raises(ValueError, match="bounds"):
        AimdLimit(1, minimum=3, maximum=2)


def test_fetches_never_take_the_status_reserve() -> None:
    allowance = CallAllowance(10)
    allowance.reserve = 4
    taken = [allowance.take("fetch", 0.0) for _ in range(10)]
    assert taken.count(True) == 6  # the share left by the reserve
    assert allowance.wait_time("fetch", 1.0) == pytest.approx(59.0, abs=0.01)
    # Status calls still find room at once, up to the whole allowance.
    assert [allowance.take("status", 1.0) for _ in range(5)] == [True] * 4 + [False]
    assert allowance.wait_time("status", 2.0) == pytest.approx(58.0)
    # A minute later every call has left the window.
    assert allowance.take("fetch", 60.0)
    assert allowance.used(61.5) == 1


def test_no_allowance_means_no_waiting() -> None:
    allowance = CallAllowance(None)
    assert all(allowance.take("fetch", 0.0) for _ in range(1000))
    assert allowance.fetch_share() is None


def test_latency_window_quantiles() -> None:
    window = LatencyWindow(size=100)
    assert window.quantile(0.5) is None
    for value in range(1, 201):
        window.add(value / 100)
    assert len(window) == 100
    assert window.quantile(0.5) == pytest.approx(1.51)
    assert window.quantile(0.99) == pytest.approx(2.0)


def test_health_counts_calls_of_the_last_minute_and_errors() -> None:
    health = LaneHealth(outcomes_kept=4)
    for at in (0.0, 10.0, 59.0, 61.0):
        health.call_started(at)
    assert health.calls_per_minute(61.0) == 3.0
    for ok in (True, False, True, False, False):
        health.call_finished(0.1, ok)
    health.call_finished(0.2, None)  # cut short by shutdown: no verdict
    assert health.error_rate == 0.75
    assert health.last_latency == 0.2


def test_fetch_order_user_first_then_groups_closest_to_complete_then_oldest() -> None:
    open_jobs = {"big": 100, "small": 2}
    queue = FetchQueue(lambda group: open_jobs[group])
    jobs = {
        name: Job(job_id=name, backend="b", group=group)
        for name, group in [
            ("b1", "big"),
            ("b2", "big"),
            ("s1", "small"),
            ("s2", "small"),
            ("mine", "big"),
        ]
    }
    for name in ("b1", "b2", "s1", "mine", "s2"):
        queue.push(jobs[name])
    queue.push(jobs["mine"], urgent=True)
    assert [queue.pop() for _ in range(6)] == ["mine", "s1", "s2", "b1", "b2", None]


def test_clock_converts_both_ways() -> None:
    clock = Clock()
    now = clock.now()
    assert clock.to_monotonic(clock.to_wall(now)) == pytest.approx(now)
    assert clock.wall_now() == pytest.approx(clock.to_wall(clock.now()), abs=0.01)
