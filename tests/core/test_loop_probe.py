"""The session's loop lag: how late the loop ran what was due, as its heartbeats say."""

from __future__ import annotations

import asyncio
import time

from monitor_core import Heartbeat
from monitor_core._loop_probe import LoopLagProbe


async def test_a_blocked_loop_is_seen_as_late_and_the_worst_is_taken_once() -> None:
    probe = LoopLagProbe(every=0.005)
    task = asyncio.create_task(probe.run())
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.2)  # noqa: ASYNC251 - the blocking call on the loop that the probe is there to see
        await asyncio.sleep(0.05)
        assert probe.take() >= 0.19
        await asyncio.sleep(0.05)
        assert probe.take() < 0.19, "taken: the next heartbeat starts over"
    finally:
        task.cancel()


def test_a_heartbeat_from_before_the_field_still_reads() -> None:
    from monitor_core.transports import decode_event

    old = b'{"v":2,"type":"Heartbeat","data":{"at":1.0,"seq":3,"jobs_total":5,"jobs_active":1,"jobs_final":4}}'
    assert decode_event(old) == Heartbeat(at=1.0, seq=3, jobs_total=5, jobs_active=1, jobs_final=4, loop_lag=0.0)
