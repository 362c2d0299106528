"""Recording a session (from its side and a viewer's) and replaying it."""

from __future__ import annotations

import asyncio
import gzip
import subprocess
import sys
from pathlib import Path

import pytest

from monitor_core import ConnectionChanged, Event, JobChanged, RefreshJob, SessionEnded, Snapshot, SourceFailed
from monitor_core.transports import Backoff, StateFold
from monitor_core.transports.recording import RecordingSource, ReplaySource, load_recording
from monitor_core.transports.socket_source import SocketSource

from .conftest import sim_command
from .helpers import Watched, next_item, read_summary, spawn, stream_of, wait_process, watch


async def run_tui(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "ganga_tui", *args]
    return await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=90, check=False)


async def _replay_final_states(path: Path) -> tuple[dict[str, str], list[Event | ConnectionChanged]]:
    replay = ReplaySource(path, speed=0)
    watched = await watch(replay, Watched(), until_ended=False)
    return watched.fold.final_states(), watched.items


async def test_recorded_session_replays_to_the_live_final_states(run_dir: Path) -> None:
    sock, summary = run_dir / "s.sock", run_dir / "summary.json"
    session_side, viewer_side = run_dir / "session.jsonl.gz", run_dir / "viewer.jsonl.gz"
    process = spawn(
        sim_command(
            "--jobs",
            "10",
            "--socket",
            str(sock),
            "--state-dir",
            str(run_dir / "state"),
            "--record",
            str(session_side),
            "--exit-when-done",
            "--linger",
            "1",
            "--summary",
            str(summary),
        )
    )
    try:
        source = RecordingSource(SocketSource(sock, follow=False, backoff=Backoff(0.05, 0.3)), viewer_side)
        await asyncio.wait_for(watch(source, Watched(), until_ended=False), 60)
        assert await wait_process(process) == 0
    finally:
        process.kill()
    live = read_summary(summary)["final_states"]
    for path in (session_side, viewer_side):
        final, items = await _replay_final_states(path)
        assert final == live, path
        assert isinstance(items[0], Snapshot)
        assert isinstance(items[-1], SessionEnded)
        assert items[-1].reason == "every job is final"
        assert load_recording(path).damage is None


def _write_recording(path: Path, lines: list[bytes]) -> None:
    with gzip.open(path, "wb") as stream:
        stream.write(b"".join(lines))


async def test_a_damaged_recording_replays_up_to_the_damage_and_says_where(run_dir: Path) -> None:
    sock, whole = run_dir / "s.sock", run_dir / "whole.jsonl.gz"
    process = spawn(
        sim_command(
            "--jobs",
            "6",
            "--socket",
            str(sock),
            "--state-dir",
            str(run_dir / "state"),
            "--record",
            str(whole),
            "--exit-when-done",
            "--linger",
            "0.2",
        )
    )
    assert await wait_process(process) == 0
    with gzip.open(whole, "rb") as stream:
        lines = stream.readlines()
    assert len(lines) > 20

    corrupt = run_dir / "corrupt.jsonl.gz"
    _write_recording(corrupt, [*lines[:10], b'{"v": 2, "type": "JobChanged", "data": {"at": "noon"}}\n', *lines[11:]])
    replay = ReplaySource(corrupt, speed=0)
    items = [item async for item in replay.events()]
    assert replay.damage is not None
    assert replay.damage.line == 11
    assert len(items) == 10 + 2
    stop = items[-2]
    assert isinstance(stop, ConnectionChanged)
    assert not stop.connected
    assert stop.reason.startswith("recording damaged at line 11: JobChanged: field at")
    assert isinstance(items[-1], SessionEnded)
    assert replay.failure is not None
    assert "line 11" in replay.failure

    # Cut the compressed file in the middle, as a killed recorder or a full disk would.
    truncated = run_dir / "truncated.jsonl.gz"
    data = whole.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    cut = load_recording(truncated)
    assert cut.damage is not None
    assert 1 < cut.damage.line <= len(lines)
    assert len(cut.events) == cut.damage.line - 1
    assert "line" in str(cut.damage)
    partial = StateFold()
    for event in cut.events:
        partial.apply(event)
    assert set(partial.final_states()) == {str(number) for number in range(1, 7)}

    garbage = run_dir / "garbage.jsonl.gz"
    garbage.write_bytes(b"this is not gzip at all")
    assert load_recording(garbage).damage is not None
    with pytest.raises(SourceFailed, match="is not a recording"):
        ReplaySource(garbage)
    with pytest.raises(SourceFailed, match="cannot read"):
        ReplaySource(run_dir / "no-such-file.jsonl.gz")

    # As a user runs it: a damaged recording plays up to the damage, then says where and fails;
    # a file that is no recording fails at once.
    damaged = await run_tui("--replay", str(corrupt), "--speed", "0", "--headless")
    assert damaged.returncode == 5, damaged.stdout + damaged.stderr
    assert "line 11" in damaged.stdout
    assert "jobs" in damaged.stdout
    not_one = await run_tui("--replay", str(garbage), "--headless")
    assert not_one.returncode == 2
    assert "is not a recording" in not_one.stderr


async def test_replay_controls_pause_step_seek_and_speed(run_dir: Path) -> None:
    sock, path = run_dir / "s.sock", run_dir / "rec.jsonl.gz"
    process = spawn(
        sim_command(
            "--jobs",
            "8",
            "--socket",
            str(sock),
            "--state-dir",
            str(run_dir / "state"),
            "--record",
            str(path),
            "--exit-when-done",
            "--linger",
            "0.2",
        )
    )
    assert await wait_process(process) == 0
    replay = ReplaySource(path, paused=True, hold_at_end=True)
    events = replay.recording.events
    stream = stream_of(replay)
    reader = asyncio.create_task(next_item(stream))
    await asyncio.sleep(0.2)
    assert not reader.done()  # paused: nothing comes without a step
    replay.step()
    assert await asyncio.wait_for(reader, 5) == events[0]
    replay.step(2)
    assert [await anext(stream), await anext(stream)] == list(events[1:3])

    # Seeking rebuilds the state of that moment from the snapshot and the deltas before it.
    middle = events[len(events) // 2].at
    replay.seek(middle)
    rebuilt = await asyncio.wait_for(anext(stream), 5)
    assert isinstance(rebuilt, Snapshot)
    assert rebuilt.at == middle
    expected = StateFold()
    for event in events:
        if event.at <= middle:
            expected.apply(event)
    assert {job.job_id: job.status.value for job in rebuilt.jobs} == expected.final_states()
    assert replay.position == middle

    # Back to the start, then play fast to the end: the stream holds there for another seek.
    replay.seek(0.0)
    first = await asyncio.wait_for(anext(stream), 5)
    assert isinstance(first, Snapshot)
    replay.set_speed(1000.0)
    replay.resume()
    fold = StateFold()
    fold.apply(first)
    async with asyncio.timeout(30):
        while replay.position < replay.recording.end:
            fold.apply(await anext(stream))  # type: ignore[arg-type]
    final = StateFold()
    for event in events:
        final.apply(event)
    assert fold.final_states() == final.final_states()
    assert any(isinstance(event, JobChanged) for event in events)
    waiting = asyncio.create_task(next_item(stream))
    await asyncio.sleep(0.1)
    assert not waiting.done()  # held at the end
    replay.seek(replay.recording.start)
    assert isinstance(await asyncio.wait_for(waiting, 5), Snapshot)
    await stream.aclose()
    assert not (await replay.send(RefreshJob(job_id="1"))).ok
