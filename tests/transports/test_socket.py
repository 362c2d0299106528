"""The Unix-socket transport against real `ganga-monitor-sim` processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor_core import (
    Command,
    CommandAcked,
    ConnectionChanged,
    EventBus,
    Heartbeat,
    JobRecord,
    JobStatus,
    MonitorSession,
    PauseBackend,
    RefreshJob,
    ResumeBackend,
    SchedulerConfig,
    SessionConfig,
    SessionEnded,
    SetInterval,
    Snapshot,
    TailOutput,
    execute_command,
)
from monitor_core.transports import Backoff, decode_event, encode_command, encode_event, encode_frame, read_frame
from monitor_core.transports.socket_source import SocketSource
from monitor_core.transports.unix_socket import (
    ClientStatistics,
    DiscoveredSession,
    SocketServer,
    discover_sessions,
    runtime_dir,
    socket_path_for,
)

from .conftest import sim_command
from .helpers import Stream, Watched, read_summary, spawn, stream_of, wait_for, wait_process, watch

FAST = Backoff(base=0.05, cap=0.3)


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


async def test_viewer_follows_a_session_process_and_commands_it(run_dir: Path) -> None:
    sock, summary = run_dir / "s.sock", run_dir / "summary.json"
    process = spawn(
        sim_command(
            "--jobs",
            "12",
            "--serve",
            "--socket",
            str(sock),
            "--state-dir",
            str(run_dir / "state"),
            "--exit-when-done",
            "--linger",
            "1",
            "--summary",
            str(summary),
        )
    )
    try:
        source = SocketSource(sock, follow=False, backoff=FAST)
        watched = Watched()
        viewer = asyncio.create_task(watch(source, watched))
        await wait_for(lambda: any(isinstance(item, Snapshot) for item in watched.items))
        refused = await source.send(RefreshJob(job_id="no-such-job"))
        assert not refused.ok
        assert "no job" in refused.message
        paused = await source.send(PauseBackend(backend="local"))
        assert paused.ok, paused.message
        interval = await source.send(SetInterval(backend="local", seconds=0.3))
        assert interval.ok, interval.message
        resumed = await source.send(ResumeBackend(backend="local"))
        assert resumed.ok, resumed.message
        await asyncio.wait_for(viewer, 60)
        assert await wait_process(process) == 0
    finally:
        process.kill()
    live = read_summary(summary)
    assert watched.ended
    assert watched.ended[-1].reason == "every job is final"
    assert watched.fold.final_states() == live["final_states"]
    assert len(live["final_states"]) == 12
    assert live["socket"]["commands_ok"] == 3
    assert live["socket"]["commands_refused"] == 1
    attached = next(i for i, item in enumerate(watched.items) if isinstance(item, ConnectionChanged) and item.connected)
    assert all(isinstance(item, ConnectionChanged) and not item.connected for item in watched.items[:attached])
    assert isinstance(watched.items[attached + 1], Snapshot)


async def test_killed_session_is_reported_and_a_restart_is_followed(run_dir: Path) -> None:
    sock, state = run_dir / "s.sock", run_dir / "state"
    slow = ("--jobs", "6", "--local-mean-duration", "30", "--socket", str(sock), "--state-dir", str(state))
    process = spawn(sim_command(*slow))
    restarted: subprocess.Popen[bytes] | None = None
    source = SocketSource(sock, backoff=FAST)
    watched = Watched()
    viewer = asyncio.create_task(watch(source, watched, until_ended=False))
    try:
        await wait_for(lambda: any(isinstance(item, Snapshot) and item.jobs for item in watched.items))
        seen = len(watched.items)
        process.send_signal(signal.SIGKILL)
        process.wait()
        await wait_for(lambda: any(isinstance(item, ConnectionChanged) for item in watched.items[seen:]))
        down = next(item for item in watched.items[seen:] if isinstance(item, ConnectionChanged))
        assert not down.connected
        assert "closed" in down.reason or "lost" in down.reason
        snapshots_before = sum(isinstance(item, Snapshot) for item in watched.items)
        # The dead session left its socket behind; the restarted one replaces it and resumes.
        restarted = spawn(sim_command(*slow))
        await wait_for(lambda: sum(isinstance(item, Snapshot) for item in watched.items) > snapshots_before)
        resync = [item for item in watched.items if isinstance(item, Snapshot)][-1]
        assert {job.job_id for job in resync.jobs} == {str(number) for number in range(1, 7)}
        assert watched.connection_changes[-1].connected
    finally:
        viewer.cancel()
        for proc in (process, restarted):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)


async def test_a_closed_viewer_does_not_attach_again_to_a_session_still_running(run_dir: Path) -> None:
    sock = run_dir / "s.sock"
    slow = ("--jobs", "6", "--local-mean-duration", "30", "--socket", str(sock), "--state-dir", str(run_dir / "state"))
    process = spawn(sim_command(*slow))
    source = SocketSource(sock, backoff=FAST)  # follows the session: it would attach again after a drop
    watched = Watched()
    viewer = asyncio.create_task(watch(source, watched, until_ended=False))
    try:
        await wait_for(lambda: any(isinstance(item, Snapshot) and item.jobs for item in watched.items))
        await source.aclose()
        # A viewer quitting: the stream ends, with no second snapshot fetched for no one.
        await asyncio.wait_for(viewer, 10)
        assert source.connects == 1
        assert sum(isinstance(item, Snapshot) for item in watched.items) == 1
    finally:
        viewer.cancel()
        process.terminate()
        process.wait(timeout=30)


async def test_bad_input_is_rejected_counted_and_logged_while_others_are_served(run_dir: Path) -> None:
    sock, summary, errors = run_dir / "s.sock", run_dir / "summary.json", run_dir / "stderr"
    with errors.open("wb") as stderr:
        process = spawn(
            sim_command(
                "--jobs",
                "8",
                "--local-mean-duration",
                "1.5",
                "--socket",
                str(sock),
                "--state-dir",
                str(run_dir / "state"),
                "--exit-when-done",
                "--linger",
                "1.5",
                "--summary",
                str(summary),
            ),
            stderr=stderr,
        )
    try:
        good = SocketSource(sock, follow=False, backoff=FAST)
        watched = Watched()
        viewer = asyncio.create_task(watch(good, watched))
        await wait_for(lambda: any(isinstance(item, Snapshot) for item in watched.items))

        reader, writer = await asyncio.open_unix_connection(str(sock))
        bad_messages = [
            b"\x00\xffnot json at all",
            b'{"v": 99, "type": "RefreshJob", "data": {"job_id": "1", "command_id": "wrongver"}}',
            b'{"v": 2, "type": "SetInterval", "data": {"backend": "local", "seconds": "fast", "command_id": "typed"}}',
            b'{"v": 2, "type": "RmRf", "data": {"command_id": "unknown"}}',
            b'{"v": 2, "type": "RefreshJob", "data": {"job_id": "1", "command_id": "x", "shell": "rm"}}',
            b"[1, 2, 3]",
        ]
        for payload in bad_messages:
            writer.write(_frame(payload))
        writer.write(_frame(b'{"v": 2, "type": "PauseBackend", "data": {"backend": "nope", "command_id": "valid"}}'))
        await writer.drain()
        from monitor_core.transports import decode_event, read_frame

        acks: list[CommandAcked] = []
        while len(acks) < len(bad_messages) + 1:
            body = await read_frame(reader, 1 << 28)
            assert body is not None
            event = decode_event(body)
            if isinstance(event, CommandAcked):
                acks.append(event)
        assert [ack.ok for ack in acks] == [False] * (len(bad_messages) + 1)
        assert [ack.command_id for ack in acks] == ["", "wrongver", "typed", "unknown", "x", "", "valid"]
        assert all(ack.message.startswith("rejected") for ack in acks[:-1])
        assert acks[-1].message == "no backend nope"
        writer.close()

        # A frame claiming 2 GiB: refused before its body is read, the connection dropped.
        reader, writer = await asyncio.open_unix_connection(str(sock))
        writer.write(struct.pack(">I", 2**31) + b"{")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 10) != b"" or True
        writer.close()
        # A frame cut short by the peer hanging up.
        reader, writer = await asyncio.open_unix_connection(str(sock))
        writer.write(struct.pack(">I", 100) + b'{"v": 2, "ty')
        writer.write_eof()
        await asyncio.wait_for(reader.read(), 10)
        writer.close()

        await asyncio.wait_for(viewer, 60)
        assert await wait_process(process) == 0
    finally:
        process.kill()
    live = read_summary(summary)
    assert live["socket"]["rejected"] == {
        "malformed": 2,
        "version": 1,
        "invalid": 2,
        "unknown_type": 1,
        "oversized": 1,
        "truncated": 1,
    }
    assert watched.fold.final_states() == live["final_states"]
    log = errors.read_text()
    assert log.count("rejected a message") == 8
    assert "frame of 2147483648 bytes exceeds the limit" in log
    assert "Traceback" not in log


async def test_viewer_rejects_and_counts_bad_frames_from_a_server(run_dir: Path) -> None:
    sock = run_dir / "fake.sock"
    snapshot = Snapshot(at=1.0, session="fake")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_frame(b"garbage"))
        writer.write(_frame(b'{"v": 3, "type": "Snapshot", "data": {"at": 1.0, "session": "x"}}'))
        writer.write(_frame(b'{"v": 2, "type": "Snapshot", "data": {"at": "yesterday", "session": "x"}}'))
        writer.write(_frame(b'{"v": 2, "type": "Exploit", "data": {}}'))
        writer.write(encode_frame(encode_event(snapshot)))
        writer.write(struct.pack(">I", 50) + b"cut")
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(serve, path=str(sock))
    try:
        source = SocketSource(sock, backoff=FAST, max_message_bytes=1024)
        items = []
        async for item in source.events():
            items.append(item)
            if isinstance(item, ConnectionChanged) and not item.connected:
                break
    finally:
        server.close()
    assert items[1] == snapshot
    assert dict(source.rejected) == {"malformed": 1, "version": 1, "invalid": 1, "unknown_type": 1}
    lost = items[-1]
    assert isinstance(lost, ConnectionChanged)
    assert "ended 3 bytes into a frame of 50" in lost.reason


def _connect_as_nobody(path: Path) -> subprocess.CompletedProcess[str]:
    script = (
        "import socket,sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.settimeout(5)\n"
        "try:\n"
        f"    s.connect({str(path)!r})\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__); sys.exit(3)\n"
        "data = s.recv(4096)\n"
        "print('received', len(data))\n"
    )

    def drop_privileges() -> None:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)

    # The system interpreter, since a per-user one (pyenv under /root) is out of nobody's reach.
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    return subprocess.run(
        [python, "-c", script], preexec_fn=drop_privileges, capture_output=True, text=True, timeout=30, cwd="/"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="trying another uid needs root to switch to it")
async def test_another_user_cannot_attach(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    os.chmod(run_dir, 0o755)  # the runtime directory's parent, open like /run/user is to its owner
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run_dir))
    bus = EventBus(lambda: Snapshot(at=1.0, session="private"))
    async with SocketServer(bus, session="private") as server:
        directory = runtime_dir()
        assert server.path == socket_path_for("private")
        assert server.path.parent == directory
        assert directory.stat().st_mode & 0o777 == 0o700
        assert directory.stat().st_uid == os.getuid()
        assert server.path.stat().st_mode & 0o777 == 0o600
        blocked = await asyncio.to_thread(_connect_as_nobody, server.path)
        assert blocked.returncode == 3, blocked.stderr
        assert blocked.stdout.strip() == "PermissionError"
        # Even with both locks opened by mistake, the server refuses a peer of another uid.
        directory.chmod(0o755)
        server.path.chmod(0o666)
        opened = await asyncio.to_thread(_connect_as_nobody, server.path)
        assert opened.returncode == 0, opened.stderr
        assert opened.stdout.strip() == "received 0"  # connected, then hung up on without a byte
        assert server.statistics().refused_peers == 1
        # The same check passes the owner.
        source = SocketSource(server.path, backoff=FAST)
        stream = stream_of(source)
        assert (await anext(stream)).connected  # type: ignore[union-attr]
        assert await anext(stream) == Snapshot(at=1.0, session="private")
        await stream.aclose()
    # A runtime directory left too open is tightened on use.
    directory.chmod(0o755)
    assert runtime_dir().stat().st_mode & 0o777 == 0o700


async def test_discovery_lists_live_sessions_and_removes_stale_sockets(run_dir: Path) -> None:
    bus = EventBus(lambda: Snapshot(at=1.0, session="x"))
    stale = run_dir / "dead.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(stale))
    dead.close()
    (run_dir / "dead.json").write_text("{}")
    async with (
        SocketServer(bus, session="one", path=run_dir / "one.sock", description="first") as one,
        SocketServer(bus, session="two", path=run_dir / "two.sock"),
    ):
        found = await asyncio.to_thread(discover_sessions, run_dir)
        assert sorted(item.session for item in found) == ["one", "two"]
        assert {item.pid for item in found} == {os.getpid()}
        assert not stale.exists()
        assert not (run_dir / "dead.json").exists()
        with pytest.raises(FileExistsError):
            await SocketServer(bus, session="one", path=one.path).start()
    assert not (run_dir / "one.sock").exists()
    assert await asyncio.to_thread(discover_sessions, run_dir) == []
    # A server replaces the stale socket of a dead session of the same name.
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(stale))
    dead.close()
    async with SocketServer(bus, session="dead", path=stale):
        assert [item.session for item in await asyncio.to_thread(discover_sessions, run_dir)] == ["dead"]


async def test_a_session_found_as_soon_as_its_socket_answers_names_its_pid(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session's description is whole before the socket accepts: a viewer may look at any moment."""
    bus = EventBus(lambda: Snapshot(at=1.0, session="x"))
    start_unix_server = asyncio.start_unix_server
    found_at_bind: list[DiscoveredSession] = []

    async def binding(*args: object, **kwargs: object) -> asyncio.Server:
        server = await start_unix_server(*args, **kwargs)  # type: ignore[arg-type]
        found_at_bind.extend(discover_sessions(run_dir))
        return server

    monkeypatch.setattr(asyncio, "start_unix_server", binding)
    async with SocketServer(bus, session="one", path=run_dir / "one.sock", description="first"):
        pass
    assert [(item.session, item.pid, item.description) for item in found_at_bind] == [("one", os.getpid(), "first")]
    assert not await asyncio.to_thread(lambda: list(run_dir.glob("*.partial")))


async def drain(stream: Stream) -> None:
    """Read a stream until it ends (so that command acknowledgements are read)."""
    async for _ in stream:
        pass


async def test_read_only_server_refuses_commands(run_dir: Path) -> None:
    async with MonitorSession(
        SessionConfig(state_dir=run_dir / "state", jobs=2, backends=("local",), local_mean_duration=0.2)
    ) as session:
        scheduler = session.scheduler
        assert scheduler is not None
        async with SocketServer(
            session.bus,
            session="ro",
            path=run_dir / "ro.sock",
            execute=lambda c: execute_command(scheduler, c),
            read_only=True,
        ):
            source = SocketSource(run_dir / "ro.sock", backoff=FAST)
            stream = stream_of(source)
            await anext(stream)
            await anext(stream)
            # Acks are read while the stream is read: keep reading, whatever job events come first.
            reader = asyncio.create_task(drain(stream))
            ack = await source.send(TailOutput(job_id="1"))
            assert not ack.ok
            assert ack.message == "this session is read-only"
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await stream.aclose()
            viewer_side = SocketSource(run_dir / "ro.sock", read_only=True)
            assert (await viewer_side.send(RefreshJob(job_id="1"))).message == "read-only viewer"


async def test_a_viewer_that_never_reads_does_not_slow_the_session_or_lose_job_states(run_dir: Path) -> None:
    config = SessionConfig(
        state_dir=run_dir / "state",
        jobs=60,
        backends=("local",),
        local_mean_duration=0.5,
        poll_interval=0.1,
        scheduler=SchedulerConfig(sample_every=0.005),
    )
    async with MonitorSession(config) as session:
        scheduler = session.scheduler
        assert scheduler is not None
        async with SocketServer(session.bus, session="busy", path=run_dir / "busy.sock") as server:
            stalled = socket.socket(socket.AF_UNIX)
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.connect(str(server.path))
            watched = Watched()
            viewer = asyncio.create_task(watch(SocketSource(server.path, backoff=FAST), watched, until_ended=False))
            await asyncio.wait_for(scheduler.wait_all_final(), 60)
            truth = {job_id: job.status.value for job_id, job in scheduler.jobs.items()}
            await wait_for(lambda: watched.fold.final_states() == truth)

            def clients_by_frames_sent() -> list[ClientStatistics]:
                return sorted(server.statistics().clients, key=lambda client: client.frames_sent)

            # Samples keep coming every few ms, so the reading viewer is caught up only between them.
            await wait_for(lambda: clients_by_frames_sent()[-1].subscription.pending == 0)
            clients = clients_by_frames_sent()
            assert len(clients) == 2
            slow, fast = clients
            # The stalled viewer is behind, its heartbeats and lag samples merged meanwhile.
            assert slow.subscription.pending > 0
            assert slow.subscription.coalesced > 0
            assert fast.frames_sent > slow.frames_sent
            # The stalled viewer reads at last: job changes were kept for it, in order.
            stalled.setblocking(False)
            reader, writer = await asyncio.open_unix_connection(sock=stalled)
            late = Watched()
            from monitor_core.transports import decode_event, read_frame

            while late.fold.final_states() != truth:
                body = await asyncio.wait_for(read_frame(reader, 1 << 28), 30)
                assert body is not None
                late.fold.apply(decode_event(body))
            assert all(JobStatus(status).is_final for status in late.fold.final_states().values())
            writer.close()
            viewer.cancel()


async def test_a_peer_whose_credentials_cannot_be_read_is_refused(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = EventBus(lambda: Snapshot(at=1.0, session="private"))
    async with SocketServer(bus, session="private") as server:
        # As on a system whose sockets do not report their peer (no SO_PEERCRED).
        monkeypatch.delattr(socket, "SO_PEERCRED")
        reader, writer = await asyncio.open_unix_connection(server.path)
        assert await asyncio.wait_for(reader.read(4096), timeout=5) == b""  # hung up on without a byte
        writer.close()
        assert server.statistics().refused_peers == 1
        monkeypatch.undo()
        source = SocketSource(server.path, backoff=FAST)
        stream = stream_of(source)
        assert (await anext(stream)).connected  # type: ignore[union-attr]
        assert await anext(stream) == Snapshot(at=1.0, session="private")
        await stream.aclose()


async def test_a_command_answered_while_a_snapshot_is_written_in_pieces_never_splits_it(run_dir: Path) -> None:
    jobs = tuple(
        JobRecord(job_id=str(i), backend="local", status=JobStatus.RUNNING, name=f"job-{i}") for i in range(20_000)
    )
    bus = EventBus(lambda: Snapshot(at=1.0, session="big", jobs=jobs))

    def execute(command: Command) -> CommandAcked:
        return CommandAcked(at=2.0, command_id=command.command_id, ok=True, message="done")

    async with SocketServer(bus, session="big", path=run_dir / "big.sock", execute=execute) as server:
        client = socket.socket(socket.AF_UNIX)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(str(server.path))
        client.setblocking(False)
        reader, writer = await asyncio.open_unix_connection(sock=client)
        # Not reading: the server is part way through the snapshot (megabytes) when the command comes.
        await wait_for(lambda: any(c.subscription.delivered for c in server.statistics().clients))
        await asyncio.sleep(0.3)
        writer.write(encode_frame(encode_command(RefreshJob(job_id="1", command_id="c1"))))
        await writer.drain()
        await asyncio.sleep(0.2)
        first = decode_event(await read_frame(reader, 1 << 28) or b"")
        second = decode_event(await read_frame(reader, 1 << 28) or b"")
        assert isinstance(first, Snapshot)
        assert first.jobs == jobs
        assert second == CommandAcked(at=2.0, command_id="c1", ok=True, message="done")
        writer.close()


async def test_a_snapshot_is_encoded_a_piece_at_a_time_as_a_slow_viewer_reads_it(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import monitor_core.transports.unix_socket as unix_socket

    jobs = tuple(
        JobRecord(job_id=str(i), backend="local", status=JobStatus.RUNNING, name=f"job-{i}") for i in range(20_000)
    )
    snapshot = Snapshot(at=1.0, session="big", jobs=jobs)
    made: list[int] = []
    lazy = unix_socket.iter_snapshot_pieces

    def counted(snapshot: Snapshot) -> Iterator[bytes]:
        for piece in lazy(snapshot):
            made.append(len(piece))
            yield piece

    monkeypatch.setattr(unix_socket, "iter_snapshot_pieces", counted)
    total = len(list(lazy(snapshot)))
    async with SocketServer(EventBus(lambda: snapshot), session="big", path=run_dir / "big.sock") as server:
        client = socket.socket(socket.AF_UNIX)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(str(server.path))
        client.setblocking(False)
        reader, writer = await asyncio.open_unix_connection(sock=client)
        await wait_for(lambda: bool(made))
        await asyncio.sleep(0.3)
        # The viewer has read nothing: what was made is what the socket's buffers hold and the
        # piece being written, not the message.
        assert sum(made) < 1_000_000
        assert len(made) < total
        assert decode_event(await read_frame(reader, 1 << 28) or b"") == snapshot
        assert len(made) == total
        writer.close()


async def test_a_viewer_that_selects_event_kinds_is_sent_only_those(run_dir: Path) -> None:
    """A read-only session still selects: what a connection receives is the connection's business."""
    async with MonitorSession(
        SessionConfig(state_dir=run_dir / "state", jobs=6, backends=("local",), local_mean_duration=0.2)
    ) as session:
        scheduler = session.scheduler
        assert scheduler is not None
        async with SocketServer(session.bus, session="sel", path=run_dir / "sel.sock", read_only=True) as server:
            selecting = SocketSource(run_dir / "sel.sock", backoff=FAST, kinds=("Heartbeat", "SessionEnded"))
            everything = SocketSource(run_dir / "sel.sock", backoff=FAST)
            picky, full = Watched(), Watched()
            viewers = [asyncio.create_task(watch(selecting, picky)), asyncio.create_task(watch(everything, full))]
            await wait_for(scheduler.all_final)
            seen = len(picky.items)
            scheduler.sample()
            await wait_for(lambda: any(isinstance(i, Heartbeat) for i in picky.items[seen:]))
            await wait_for(lambda: any(isinstance(i, Heartbeat) and i.jobs_total == 6 for i in full.items))
            for viewer in viewers:
                viewer.cancel()
            await asyncio.gather(*viewers, return_exceptions=True)
            assert server.statistics().rejected_total == 0
    kinds = {type(item).__name__ for item in picky.items if not isinstance(item, ConnectionChanged)}
    assert kinds == {"Snapshot", "Heartbeat"}, "the selection's answer is not passed on, nor any other kind"
    assert {"JobChanged", "OpQueued", "LagSampled"} <= {type(item).__name__ for item in full.items}
    last = [item for item in picky.items if isinstance(item, Heartbeat)][-1]
    assert sum(last.jobs_by_status.values()) == 6
    assert last.jobs_by_status == {status.value: n for status, n in Counter(scheduler.status_counts()).items() if n}, (
        "a heartbeat's counts are the book's"
    )


async def test_a_selection_of_an_unknown_kind_is_refused_and_the_viewer_gets_everything(
    run_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bus = EventBus(lambda: Snapshot(at=0.0, session="x", jobs=(), ops=(), backends=(), counters={}))
    async with SocketServer(bus, session="x", path=run_dir / "x.sock"):
        source = SocketSource(run_dir / "x.sock", backoff=FAST, kinds=("Heartbeat", "NoSuchEvent"))
        stream = stream_of(source)
        assert isinstance(await anext(stream), ConnectionChanged)
        assert isinstance(await anext(stream), Snapshot)
        await asyncio.sleep(0.2)
        bus.publish(SessionEnded(at=1.0, reason="done"))
        assert isinstance(await asyncio.wait_for(anext(stream), 10), SessionEnded)
        await stream.aclose()
    assert any("the session sends every event" in r.message and "NoSuchEvent" in r.message for r in caplog.records)


async def test_a_server_builds_every_reader_and_writer_before_it_serves(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built on first use, the first viewer's snapshot held the session's loop 51 ms."""
    from monitor_core.transports import COMMAND_TYPES, EVENT_TYPES, _codec

    monkeypatch.setattr(_codec, "_ADAPTERS", {})
    _codec._snapshot_fields.cache_clear()
    bus = EventBus(lambda: Snapshot(at=0.0, session="w", jobs=(), ops=(), backends=(), counters={}))
    async with SocketServer(bus, session="w", path=run_dir / "w.sock"):
        assert set(_codec._ADAPTERS) == set(EVENT_TYPES) | set(COMMAND_TYPES)
        assert _codec._snapshot_fields.cache_info().currsize == 1
