"""The circuit breaker: once open, only its trial call's answer moves it."""

from __future__ import annotations

import asyncio

import pytest

from monitor_core._breaker import CircuitBreaker
from monitor_core._events import BreakerState


def _breaker(now: list[float], states: list[BreakerState]) -> CircuitBreaker:
    return CircuitBreaker(
        threshold=2,
        reset_after=1.0,
        reset_cap=8.0,
        clock=lambda: now[0],
        on_change=lambda state, _reason: states.append(state),
    )


async def test_calls_let_through_before_it_opened_do_not_move_it_and_the_trial_does() -> None:
    now, states = [0.0], []
    breaker = _breaker(now, states)
    under_way = [await breaker.acquire() for _ in range(3)]
    assert under_way == [False] * 3, "no trial while closed"
    breaker.record_failure("refused", trial=False)
    breaker.record_failure("refused", trial=False)
    assert breaker.state == "open"
    # A stopping service finishes the requests it holds while it refuses new connections.
    breaker.record_success(trial=under_way[0])
    assert breaker.state == "open", "an answer to a call from before the opening closed it"
    now[0] = 1.0
    trial = await breaker.acquire()
    assert trial
    assert breaker.state == "half_open"
    breaker.record_success(trial=under_way[1])
    breaker.record_failure("refused", trial=under_way[2])
    assert breaker.state == "half_open", "only the trial's answer moves a half-open breaker"
    with pytest.raises(TimeoutError):  # no second trial while the first is under way
        async with asyncio.timeout(0.05):
            await breaker.acquire()
    breaker.record_failure("refused", trial=trial)
    assert breaker.state == "open"
    assert breaker.retry_at == 3.0, "the pause doubled after the failed trial"
    now[0] = 3.0
    trial = await breaker.acquire()
    breaker.record_success(trial=trial)
    assert states == ["open", "half_open", "open", "half_open", "closed"]
    assert breaker.failures == 0


async def test_a_trial_that_never_ran_gives_its_slot_back_and_another_call_does_not() -> None:
    now, states = [0.0], []
    breaker = _breaker(now, states)
    under_way = await breaker.acquire()
    breaker.record_failure("refused", trial=False)
    breaker.record_failure("refused", trial=False)
    now[0] = 1.0
    trial = await breaker.acquire()
    breaker.release(trial=under_way)  # cancelled: it was no trial, so no second trial goes out
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await breaker.acquire()
    breaker.release(trial=trial)
    assert await breaker.acquire(), "the trial's slot was given back"
