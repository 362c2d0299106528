"""`ganga-monitor-tui --headless` attached to real sessions: socket, discovery, MQTT and replay."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from monitor_core.transports import StateFold, decode_event

from .conftest import Broker, sim_command
from .helpers import read_summary, spawn, wait_process


def _tui(*args: str, env: dict[str, str] | None = None) -> list[str]:
    return [sys.executable, "-m", "ganga_tui", *args]


async def _run_tui(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, _tui(*args), capture_output=True, text=True, timeout=90, env=env, check=False
    )


async def _serving(sock: Path) -> None:
    """Wait until a session started beside the test serves (attaching earlier fails fast, by design)."""
    await asyncio.to_thread(_wait_for_socket, sock)


def _fold_json_lines(stdout: str) -> tuple[StateFold, dict[str, Any]]:
    fold = StateFold()
    summary: dict[str, Any] = {}
    for line in stdout.splitlines():
        document = json.loads(line)
        if document["type"] == "Summary":
            summary = document["data"]
        elif document["type"] != "ConnectionChanged":
            fold.apply(decode_event(line))
    return fold, summary


async def test_headless_attach_over_the_socket_until_done(run_dir: Path) -> None:
    sock, summary = run_dir / "s.sock", run_dir / "summary.json"
    process = spawn(
        sim_command(
            "--jobs", "8", "--socket", str(sock), "--state-dir", str(run_dir / "state"),
            "--exit-when-done", "--linger", "2", "--summary", str(summary), "--record", str(run_dir / "rec.jsonl.gz"),
        )
    )  # fmt: skip
    try:
        await _serving(sock)
        result = await _run_tui("--headless", "--attach", str(sock), "--json", "--until-done")
        assert await wait_process(process) == 0
    finally:
        process.kill()
    assert result.returncode == 0, result.stderr
    fold, totals = _fold_json_lines(result.stdout)
    live = read_summary(summary)["final_states"]
    assert fold.final_states() == live
    assert totals["ok"] is True
    assert totals["jobs"] == 8

    replayed = await _run_tui("--headless", "--replay", str(run_dir / "rec.jsonl.gz"), "--speed", "0", "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert _fold_json_lines(replayed.stdout)[0].final_states() == live


async def test_no_target_discovers_the_one_running_session(run_dir: Path) -> None:
    env = {**os.environ, "XDG_RUNTIME_DIR": str(run_dir)}
    nothing = await _run_tui("--headless", env=env)
    assert nothing.returncode == 2
    assert "no running session found" in nothing.stderr

    process = spawn(
        sim_command("--jobs", "4", "--serve", "--name", "found-me", "--state-dir", str(run_dir / "state")), env=env
    )
    try:
        await asyncio.to_thread(_wait_for_socket, run_dir / "ganga-monitor" / "found-me.sock")
        result = await _run_tui("--headless", "--until-done", env=env)
    finally:
        process.terminate()
        await wait_process(process)
    assert result.returncode == 0, result.stderr
    assert "4/4 final" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith("exit 0: every job is final")
    # A session that exits cleanly removes its socket; the directory stays private.
    assert not (run_dir / "ganga-monitor" / "found-me.sock").exists()
    assert (run_dir / "ganga-monitor").stat().st_mode & 0o777 == 0o700


def _wait_for_socket(path: Path) -> None:
    import time

    deadline = time.monotonic() + 30
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.05)


@pytest.mark.mosquitto
async def test_headless_attach_through_mqtt(broker: Broker, run_dir: Path) -> None:
    summary = run_dir / "summary.json"
    process = spawn(
        sim_command(
            "--jobs", "5", "--name", "remote", "--state-dir", str(run_dir / "remote"), "--mqtt", broker.url,
            "--exit-when-done", "--linger", "1", "--summary", str(summary),
        )
    )  # fmt: skip
    try:
        result = await _run_tui("--headless", "--mqtt", broker.url, "--session", "remote", "--json", "--until-done")
        assert await wait_process(process) == 0
    finally:
        process.kill()
    assert result.returncode == 0, result.stderr
    fold, totals = _fold_json_lines(result.stdout)
    assert fold.final_states() == read_summary(summary)["final_states"]
    assert totals["ok"] is True


async def test_contradictory_targets_are_a_usage_error() -> None:
    result = await _run_tui("--attach", "/nonexistent.sock", "--replay", "x.jsonl.gz")
    assert result.returncode == 2
    assert "choose one of --attach, --replay" in result.stderr


async def test_the_tui_attaches_over_the_socket_and_drives_a_replay_with_keys(run_dir: Path) -> None:
    from ganga_tui.app import GangaMonitorApp
    from monitor_core.transports.recording import ReplaySource
    from monitor_core.transports.socket_source import SocketSource

    sock, recording = run_dir / "s.sock", run_dir / "rec.jsonl.gz"
    process = spawn(
        sim_command(
            "--jobs", "6", "--socket", str(sock), "--state-dir", str(run_dir / "state"), "--record", str(recording),
            "--exit-when-done", "--linger", "1.5", "--summary", str(run_dir / "summary.json"),
        )
    )  # fmt: skip
    try:
        await _serving(sock)
        app = GangaMonitorApp(SocketSource(sock, follow=False))
        async with app.run_test(size=(120, 40)) as pilot:
            await _until(pilot, lambda: app.ended is not None)
            live = read_summary(run_dir / "summary.json")["final_states"]
            assert {job_id: row.status.value for job_id, row in app.store.rows.items()} == live
        assert await wait_process(process) == 0
    finally:
        process.kill()

    replay = ReplaySource(recording, paused=True, hold_at_end=True)
    app = GangaMonitorApp(replay)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("full_stop")
        await _until(pilot, lambda: len(app.store.rows) == 6)  # the first event, the snapshot
        assert replay.paused
        first = replay.position
        await pilot.press("greater_than_sign", "comma")
        assert replay.speed == 2.0
        assert not replay.paused
        await pilot.press("right_square_bracket")
        await _until(pilot, lambda: replay.position >= min(first + 10.0, replay.recording.end))
        await pilot.press("less_than_sign", "less_than_sign")
        assert replay.speed == 0.5
        await pilot.press("left_square_bracket")
        await _until(pilot, lambda: replay.position < replay.recording.end)


async def _until(pilot: Any, condition: Any) -> None:
    async with asyncio.timeout(60):
        while not condition():
            await pilot.pause(0.02)


async def test_the_picker_returns_the_chosen_session(run_dir: Path) -> None:
    from ganga_tui.screens.session_picker import _PickerApp
    from monitor_core.transports.unix_socket import DiscoveredSession

    sessions = [
        DiscoveredSession(run_dir / "a.sock", "alpha", pid=11, started_at=1.0e9, description="200 jobs"),
        DiscoveredSession(run_dir / "b.sock", "beta", pid=12),
    ]
    app = _PickerApp(sessions)
    async with app.run_test(size=(100, 20)) as pilot:
        await pilot.pause()
        await pilot.press("down", "enter")
    assert app.return_value == run_dir / "b.sock"
    app = _PickerApp(sessions)
    async with app.run_test(size=(100, 20)) as pilot:
        await pilot.pause()
        await pilot.press("escape")
    assert app.return_value is None


async def test_attach_to_a_path_where_nothing_serves_exits_2_at_once(run_dir: Path) -> None:
    for headless in (["--headless"], []):
        result = await _run_tui("--attach", str(run_dir / "nothing-here.sock"), *headless)
        assert result.returncode == 2, result.stderr
        assert "no session socket at" in result.stderr
    not_a_socket = run_dir / "plain-file"
    not_a_socket.write_text("hello")
    result = await _run_tui("--attach", str(not_a_socket), "--headless")
    assert result.returncode == 2
    assert "is not a socket" in result.stderr


async def test_the_wait_grammar_holds_for_an_attached_session_and_its_replay(run_dir: Path) -> None:
    sock, recording = run_dir / "s.sock", run_dir / "rec.jsonl.gz"
    process = spawn(
        sim_command(
            "--jobs", "12", "--socket", str(sock), "--state-dir", str(run_dir / "state"),
            "--failure-rate", "0.5", "--mean-duration", "2", "--record", str(recording),
        )
    )  # fmt: skip
    try:
        await _serving(sock)
        timed_out = await _run_tui("--headless", "--attach", str(sock), "--until", "group:no-such-group:final",
                                   "--timeout", "1")  # fmt: skip
        assert timed_out.returncode == 3, timed_out.stdout + timed_out.stderr
        assert "--timeout passed" in timed_out.stdout
        failed = await _run_tui("--headless", "--attach", str(sock), "--fail-on", "any:failed", "--json")
        assert failed.returncode == 4, failed.stderr
        fold, summary = _fold_json_lines(failed.stdout)
        assert summary["exit_code"] == 4
        assert any(status == "failed" for status in fold.final_states().values())
        local = await _run_tui("--headless", "--attach", str(sock), "--until", "backend:local:final")
        assert local.returncode == 0, local.stdout + local.stderr
        assert "--until all:backend:local:final held" in local.stdout
        done = await _run_tui("--headless", "--attach", str(sock), "--until-done", "--json")
        assert done.returncode == 0, done.stderr
        assert _fold_json_lines(done.stdout)[1]["ok"] is True
    finally:
        process.terminate()
        await wait_process(process)
    # The same grammar over the recording of that session.
    replayed = await _run_tui("--headless", "--replay", str(recording), "--speed", "0", "--until-done")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    replay_failed = await _run_tui("--headless", "--replay", str(recording), "--speed", "0", "--fail-on", "any:failed")
    assert replay_failed.returncode == 4
    slow = await _run_tui("--headless", "--replay", str(recording), "--until-done", "--timeout", "0.5")
    assert slow.returncode == 3
    ended = await _run_tui("--headless", "--replay", str(recording), "--speed", "0", "--until", "group:nope:final")
    assert ended.returncode == 1
    assert "the stream ended before --until" in ended.stdout


async def test_a_socket_viewer_that_asks_to_resync_gets_a_fresh_snapshot_without_a_disconnect(run_dir: Path) -> None:
    from monitor_core import ConnectionChanged, Snapshot
    from monitor_core.transports.socket_source import SocketSource

    sock = run_dir / "s.sock"
    process = spawn(sim_command("--jobs", "6", "--socket", str(sock), "--state-dir", str(run_dir / "state")))
    try:
        await _serving(sock)
        source = SocketSource(sock, follow=False)
        stream = source.events()
        items = []
        async with asyncio.timeout(30):
            async for item in stream:
                items.append(item)
                if isinstance(item, Snapshot):
                    break
            assert source.resync()
            async for item in stream:
                items.append(item)
                if isinstance(item, Snapshot):
                    break
        await stream.aclose()  # type: ignore[attr-defined]
        await source.aclose()
    finally:
        process.terminate()
        await wait_process(process)
    snapshots = [item for item in items if isinstance(item, Snapshot)]
    assert len(snapshots) == 2
    assert len(snapshots[1].jobs) == 6
    assert source.connects == 2
    assert not any(isinstance(item, ConnectionChanged) and not item.connected for item in items)
