"""Long work on the session's loop yields when its time slice is spent, whatever its batch size."""

from __future__ import annotations

import asyncio
import gc
import socket
import time
from pathlib import Path

from monitor_core import EventBus, JobChanged, JobStatus, Snapshot, _time_slice
from monitor_core._time_slice import TimeSlice
from monitor_core.transports import encode_event
from monitor_core.transports._framing import CHUNKED, HEADER
from monitor_core.transports.unix_socket import SocketServer


def test_the_clock_is_read_every_few_steps_and_a_spent_slice_says_so() -> None:
    time_slice = TimeSlice(0.0, check_every=4)
    time.sleep(0.001)
    assert [time_slice.spent() for _ in range(8)] == [False, False, False, True] * 2
    roomy = TimeSlice(60.0, check_every=1)
    assert not any(roomy.spent() for _ in range(100))


async def test_a_yield_lets_the_others_run_and_starts_a_new_slice() -> None:
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    time_slice = TimeSlice(0.0, check_every=1)
    time.sleep(0.001)  # noqa: ASYNC251 - the busy stretch of work whose slice runs out
    assert time_slice.spent()
    task = asyncio.create_task(other())
    await time_slice.yield_to_loop()
    assert ran == ["other"]
    await task
    slow = TimeSlice(60.0, check_every=1)
    await slow.yield_to_loop()
    assert not slow.spent()


async def test_a_viewer_far_behind_is_sent_its_backlog_a_slice_at_a_time(tmp_path: Path) -> None:
    """Batches too big to ever fill: only the time slice makes the pump let the rest of the loop in."""
    backlog = [
        JobChanged(
            at=float(n), job_id=str(n), backend="local", old=JobStatus.SUBMITTED, new=JobStatus.RUNNING, source="poll"
        )
        for n in range(50_000)
    ]
    # Times are the loop thread's CPU time: a turn held by the pump's own work counts, a turn the
    # system gave to another process (the suite's other worker, a service it started) does not.
    started = time.thread_time()
    for event in backlog:
        encode_event(event)
    encoding = time.thread_time() - started
    bus = EventBus(lambda: Snapshot(at=0.0, session="t"))
    path = tmp_path / "s.sock"
    async with SocketServer(bus, session="t", path=path, batch_events=10 * len(backlog)):
        # Read on a thread, so that the reading adds no turns of the loop.
        viewer = socket.socket(socket.AF_UNIX)
        viewer.connect(str(path))
        reading = asyncio.create_task(asyncio.to_thread(_read_frames, viewer, 1 + len(backlog)))
        await asyncio.sleep(0.1)  # the snapshot is sent
        longest = 0.0
        # A full collection over the suite's heap can take longer than the whole encoding; it is
        # the interpreter's pause, not the pump's.
        gc.disable()
        try:
            bus.publish_many(backlog)
            last = time.thread_time()
            while not reading.done():
                await asyncio.sleep(0)
                now = time.thread_time()
                longest, last = max(longest, now - last), now
        finally:
            gc.enable()
        assert await reading == 1 + len(backlog)
        viewer.close()
    # Sent in one go, the backlog would hold the loop for as long as encoding it takes (100 ms
    # or more); a slice at a time, for a few ms, or as long as the system gives another process.
    assert longest < encoding / 4, f"the loop was held {longest * 1000:.1f} ms; encoding takes {encoding * 1000:.1f} ms"


def _read_frames(viewer: socket.socket, count: int) -> int:
    stream = viewer.makefile("rb")
    for _ in range(count):
        (size,) = HEADER.unpack(stream.read(HEADER.size))
        if size == CHUNKED:
            while (size := HEADER.unpack(stream.read(HEADER.size))[0]) != 0:
                stream.read(size)
        else:
            stream.read(size)
    return count


async def test_the_tasks_busy_in_one_turn_of_the_loop_share_one_slice_and_each_gets_its_part() -> None:
    """Three tasks working through backlogs: a turn runs about one slice of work, not three."""
    budget = 0.03
    turns: list[float] = []
    steps = {name: 0 for name in "abc"}
    stop = False

    async def busy(name: str) -> None:
        time_slice = TimeSlice(budget, check_every=1)
        while not stop:
            steps[name] += 1
            if time_slice.spent():
                await time_slice.yield_to_loop()

    async def count_turns() -> None:
        # Turns timed from one wake-up of a task queued behind the busy ones to the next.
        loop = asyncio.get_running_loop()
        while len(turns) < 12:
            started = loop.time()
            await asyncio.sleep(0)
            turns.append(loop.time() - started)

    workers = [asyncio.create_task(busy(name)) for name in "abc"]
    await asyncio.sleep(0)
    await count_turns()
    stop = True
    await asyncio.gather(*workers)
    typical = sorted(turns[2:])[len(turns[2:]) // 2]
    assert typical < 2 * budget, f"a turn took {typical:.3f}s: the slices were not shared (3 slices: {3 * budget}s)"
    assert all(steps.values()), steps


async def test_only_the_tasks_that_work_long_enough_to_look_at_the_clock_share_a_turn() -> None:
    """A task woken for a step or two (one event, one batch) leaves the busy ones their whole share."""
    loop = asyncio.get_running_loop()

    async def glance() -> None:
        TimeSlice(check_every=16).spent()  # one step: the clock is not read

    async def work() -> None:
        TimeSlice(check_every=1).spent()

    await asyncio.gather(glance(), glance(), work())
    await asyncio.sleep(0)
    assert _time_slice._turns[loop].before == 1
