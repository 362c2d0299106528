"""The session's loop lag: how late the loop ran what was due, as its heartbeats say."""

from __future__ import annotations

import asyncio
import time

from monitor_core import LOOP_LAG_BOUNDS, Heartbeat, loop_lag_quantile
from monitor_core._loop_probe import LoopLagProbe


async def test_a_blocked_loop_is_seen_as_late_and_what_is_taken_starts_over() -> None:
    probe = LoopLagProbe(every=0.005)
    task = asyncio.create_task(probe.run())
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.2)  # noqa: ASYNC251 - the blocking call on the loop that the probe is there to see
        await asyncio.sleep(0.05)
        worst, bins = probe.take()
        assert worst >= 0.19
        assert len(bins) == len(LOOP_LAG_BOUNDS) + 1
        assert sum(bins[LOOP_LAG_BOUNDS.index(0.2) :]) == 1, "one wake-up came 0.2 s late"
        assert sum(bins) >= 5
        await asyncio.sleep(0.05)
        worst, bins = probe.take()
        assert worst < 0.19, "taken: the next heartbeat starts over"
        assert sum(bins[LOOP_LAG_BOUNDS.index(0.2) :]) == 0
    finally:
        task.cancel()


def test_a_quantile_is_the_bound_of_the_bin_it_falls_in() -> None:
    bins = [0] * (len(LOOP_LAG_BOUNDS) + 1)
    bins[0] = 989  # within 1 ms
    bins[3] = 10  # within 10 ms
    bins[-1] = 1  # later than a second
    assert loop_lag_quantile(bins, 0.5) == 0.001
    assert loop_lag_quantile(bins, 0.99) == 0.01
    assert loop_lag_quantile(bins, 1.0) == float("inf")
    assert loop_lag_quantile([0] * len(bins), 0.99) is None


def test_a_heartbeat_from_before_the_fields_still_reads() -> None:
    from monitor_core.transports import decode_event, encode_event

    old = b'{"v":2,"type":"Heartbeat","data":{"at":1.0,"seq":3,"jobs_total":5,"jobs_active":1,"jobs_final":4}}'
    assert decode_event(old) == Heartbeat(at=1.0, seq=3, jobs_total=5, jobs_active=1, jobs_final=4)
    new = Heartbeat(at=1.0, seq=3, jobs_total=5, jobs_active=1, jobs_final=4, loop_lag=0.02, loop_lag_bins=(9, 1))
    assert decode_event(encode_event(new)) == new
