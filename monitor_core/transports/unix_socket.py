"""The embedded default transport: a session serves its bus on a Unix-domain socket.

Sockets live in a per-user runtime directory (``$XDG_RUNTIME_DIR/ganga-monitor`` or
``/tmp/ganga-monitor-<uid>``) of mode 0700, each socket of mode 0600, so only their
owner reaches them; the server also checks each peer's uid. Every viewer gets its own
bus subscription: a snapshot on connect, then deltas, in length-prefixed frames. A
viewer that reads slowly only fills its own subscription, which coalesces; it never
slows the session. Viewers send commands back on the same connection; each is
validated and answered with a :class:`~monitor_core.CommandAcked`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import socket
import stat
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final

from .._bus import EventBus, Subscription, SubscriptionClosed, SubscriptionStatistics
from .._commands import Command, SelectEvents
from .._events import CommandAcked, Event, Snapshot
from .._files import write_whole
from .._memory import release_free_memory
from .._time_slice import TimeSlice
from ._codec import (
    MAX_COMMAND_BYTES,
    EncodedEvents,
    WireError,
    command_id_of,
    decode_command,
    encode_event,
    event_kinds,
    iter_snapshot_pieces,
    warm_up,
)
from ._framing import CHUNKED, HEADER, FrameError, read_frame

__all__ = [
    "DiscoveredSession",
    "ServerStatistics",
    "SocketServer",
    "discover_sessions",
    "runtime_dir",
    "socket_path_for",
]

log = logging.getLogger(__name__)

SOCKET_SUFFIX: Final = ".sock"
_INFO_SUFFIX: Final = ".json"
_FLUSH_TIMEOUT: Final = 2.0
_MAX_SOCKET_PATH: Final = 107
"""sun_path holds 108 bytes with the terminating NUL."""

Executor = Callable[[Command], CommandAcked]


class RuntimeDirError(OSError):
    """The runtime directory is not private to this user, so it is not used."""


def runtime_dir(create: bool = True) -> Path:
    """This user's directory of session sockets, made private (0700) if it is new.

    Args:
        create: make the directory when it does not exist.

    Raises:
        RuntimeDirError: it exists but belongs to someone else or others can enter it.
    """
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(xdg) / "ganga-monitor" if xdg and Path(xdg).is_dir() else Path(f"/tmp/ganga-monitor-{os.getuid()}")
    if create:
        with contextlib.suppress(FileExistsError):
            base.mkdir(mode=0o700)
    if base.exists():
        info = base.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise RuntimeDirError(f"{base} is not a directory owned by uid {os.getuid()}; refusing to use it")
        if info.st_mode & 0o077:
            # Ours but too open (an old umask): tighten rather than serve through it.
            base.chmod(0o700)
    return base


def socket_path_for(session: str, directory: Path | None = None) -> Path:
    """Where a session's socket goes, from its name (made filename-safe)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", session).strip(".") or "session"
    directory = directory or runtime_dir()
    room = _MAX_SOCKET_PATH - len(str(directory)) - 1 - len(SOCKET_SUFFIX)
    return directory / (name[: max(room, 8)] + SOCKET_SUFFIX)


@dataclass(frozen=True, slots=True)
class DiscoveredSession:
    """A running session found in the runtime directory."""

    path: Path
    session: str
    pid: int | None = None
    started_at: float | None = None
    description: str = ""


def _probe(path: Path, timeout: float = 1.0) -> bool:
    """Whether something accepts connections on the socket; ``False`` means it is stale."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as exc:
        # Busy or unreachable for another reason: not provably dead, so leave it be.
        log.debug("probing %s: %s", path, exc)
        return True
    finally:
        probe.close()
    return True


def _read_info(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.with_suffix(_INFO_SUFFIX).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def discover_sessions(directory: Path | None = None, *, clean_stale: bool = True) -> list[DiscoveredSession]:
    """The sessions serving in the runtime directory, newest first.

    Args:
        directory: where to look (default: :func:`runtime_dir`).
        clean_stale: remove sockets nobody listens on (their session died without closing).

    Returns:
        One entry per live socket.
    """
    directory = directory or runtime_dir(create=False)
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("*" + SOCKET_SUFFIX)):
        if not stat.S_ISSOCK(path.lstat().st_mode):
            continue
        if not _probe(path):
            if clean_stale:
                log.info("removing stale socket %s", path)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                with contextlib.suppress(FileNotFoundError):
                    path.with_suffix(_INFO_SUFFIX).unlink()
            continue
        info = _read_info(path)
        pid, started, description = info.get("pid"), info.get("started_at"), info.get("description")
        session = info.get("session")
        found.append(
            DiscoveredSession(
                path=path,
                session=session if isinstance(session, str) else path.stem,
                pid=pid if isinstance(pid, int) else None,
                started_at=float(started) if isinstance(started, (int, float)) else None,
                description=description if isinstance(description, str) else "",
            )
        )
    found.sort(key=lambda item: item.started_at or 0.0, reverse=True)
    return found


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    """One connected viewer: its peer and how its subscription copes."""

    name: str
    pid: int | None
    subscription: SubscriptionStatistics
    frames_sent: int
    commands: int


@dataclass(frozen=True, slots=True)
class ServerStatistics:
    """What a server has seen since it started."""

    clients: tuple[ClientStatistics, ...]
    connections_total: int
    refused_peers: int
    commands_ok: int
    commands_refused: int
    rejected: dict[str, int] = field(default_factory=dict)
    """Messages rejected, by kind: malformed, oversized, truncated, version, unknown_type, invalid."""

    @property
    def rejected_total(self) -> int:
        """Every rejected message."""
        return sum(self.rejected.values())


def _peer_credentials(writer: asyncio.StreamWriter) -> tuple[int, int, int] | None:
    """The peer's (pid, uid, gid), or ``None`` when the kernel does not say."""
    sock = writer.get_extra_info("socket")
    peercred = getattr(socket, "SO_PEERCRED", None)
    if sock is None or peercred is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, peercred, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
    except (OSError, struct.error):
        return None
    return pid, uid, gid


class _Client:
    """One viewer connection: a writer task on its own subscription, a reader of its commands."""

    def __init__(
        self,
        server: SocketServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        name: str,
        pid: int | None,
        subscription: Subscription,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.name = name
        self.pid = pid
        self.subscription = subscription
        self.frames_sent = 0
        self.commands = 0
        self._frame_lock = asyncio.Lock()
        """Held while a frame is written in several pieces with awaits between them (a snapshot)."""

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(self.name, self.pid, self.subscription.statistics(), self.frames_sent, self.commands)

    def send(self, message: bytes) -> None:
        # Header and body written with no await between them keep frames whole however the
        # two tasks interleave, without copying a snapshot's megabytes into one buffer.
        self.writer.write(HEADER.pack(len(message)))
        self.writer.write(message)
        self.frames_sent += 1

    async def pump_events(self) -> None:
        """Copy the subscription to the socket, a batch at a time, waiting for the socket to drain.

        An event is encoded once for every viewer (the server's :class:`EncodedEvents`); a batch
        of frames goes to the socket in one write, and the pump yields to the loop between
        batches, so a viewer hundreds of thousands of events behind never holds the loop for
        longer than one batch: ``batch_events`` events, or one time slice if that is sooner. A
        snapshot, this viewer's own and megabytes long at 100,000 jobs, is encoded on a worker
        thread so the loop keeps running meanwhile (it is immutable, so that is safe).
        """
        encoded = self.server.encoded
        batch_events = self.server.batch_events
        pack = HEADER.pack
        while True:
            try:
                event: Event | None = await self.subscription.receive()
            except SubscriptionClosed:
                return
            frames: list[bytes] = []
            # Whatever the batch's size: 256 events took 8 ms of the loop on average in a
            # completion burst (26 ms at worst), the loop's longest stalls then.
            time_slice = TimeSlice()
            while event is not None:
                if isinstance(event, Snapshot):
                    self._write_frames(frames)
                    frames = []
                    await self._send_snapshot(event)
                    event = None
                    # Its tens of MB are free now; without this they stay in the allocator's heap.
                    await asyncio.to_thread(release_free_memory)
                else:
                    message = encoded.encode(event)
                    frames.append(pack(len(message)))
                    frames.append(message)
                    if time_slice.spent() or len(frames) >= 2 * batch_events:
                        self._write_frames(frames)
                        frames = []
                        await self.writer.drain()
                        # drain() returns at once while the socket keeps up: yield regardless.
                        await time_slice.yield_to_loop()
                event = self.subscription.receive_nowait()
            self._write_frames(frames)
            await self.writer.drain()

    async def _send_snapshot(self, snapshot: Snapshot) -> None:
        """Write a snapshot as one chunked message, each piece encoded when its turn comes.

        A piece is encoded only once the one before has drained, so neither the whole message
        nor a copy of it in the transport's buffer is ever held: a viewer that takes half a
        minute to read 30 MB costs the session one piece, not the message, meanwhile.

        On the loop, a piece (about 0.3 ms) a turn. A worker thread holds the interpreter's lock
        while it encodes, and took it again at each of the loop's system calls: while a viewer
        read its snapshot, the loop's turns ran late by up to 14 ms.
        """
        pieces = iter_snapshot_pieces(snapshot)
        async with self._frame_lock:
            self.writer.write(HEADER.pack(CHUNKED))
            while (piece := next(pieces, None)) is not None:
                self.writer.write(HEADER.pack(len(piece)))
                self.writer.write(piece)
                await self.writer.drain()
                # drain() returns at once while the socket keeps up: yield regardless.
                await asyncio.sleep(0)
            self.writer.write(HEADER.pack(0))
            self.frames_sent += 1

    def _write_frames(self, frames: list[bytes]) -> None:
        """Whole frames (header, body, ...) in one write: one copy and one send per batch, not per event."""
        if frames:
            self.writer.write(b"".join(frames))
            self.frames_sent += len(frames) // 2

    async def read_commands(self) -> None:
        """Validate and carry out each command; a framing error ends the connection."""
        while True:
            try:
                body = await read_frame(self.reader, MAX_COMMAND_BYTES)
            except FrameError as exc:
                self.server._reject(self, exc.kind, str(exc))
                await self._refuse("", f"rejected: {exc}; closing the connection")
                return
            if body is None:
                return
            self.commands += 1
            try:
                command = decode_command(body)
            except WireError as exc:
                self.server._reject(self, exc.kind, str(exc))
                await self._refuse(command_id_of(body), f"rejected: {exc}")
                continue
            if isinstance(command, SelectEvents):
                # This connection's business, not the session's: allowed to read-only viewers too.
                await self._send_ack(self._select(command))
            else:
                await self._send_ack(self.server._execute(command))

    def _select(self, command: SelectEvents) -> CommandAcked:
        try:
            kinds = event_kinds(command.kinds)
        except WireError as exc:
            return CommandAcked(at=time.time(), command_id=command.command_id, ok=False, message=str(exc))
        self.subscription.select(kinds)
        names = ", ".join(kind.__name__ for kind in kinds)
        log.info("%s: sending only %s", self.name, names)
        return CommandAcked(
            at=time.time(), command_id=command.command_id, ok=True, message=f"sending only {names} (and snapshots)"
        )

    async def _send_ack(self, ack: CommandAcked) -> None:
        # Never inside a snapshot that is being written in pieces.
        async with self._frame_lock:
            self.send(encode_event(ack))

    async def _refuse(self, command_id: str, message: str) -> None:
        await self._send_ack(CommandAcked(at=time.time(), command_id=command_id, ok=False, message=message))


class SocketServer:
    """Serves a bus to viewers on a Unix-domain socket, as an async context manager.

    Args:
        bus: the session's bus.
        path: the socket's path (default: :func:`socket_path_for` the session name).
        session: the session's name, for discovery.
        execute: carries out a validated command; ``None`` refuses every command.
        read_only: refuse every command (a shared screen).
        description: one line about the session, shown by discovery.
        max_pending: each viewer's buffer before rebuildable events are coalesced. Sized for a
            burst of 100,000 jobs: the buffer holds references to events shared by every
            viewer, while each resync builds and encodes a snapshot of every job and
            operation on the loop (seconds and tens of MB at 100,000 jobs).
        hard_limit: buffered job changes after which a viewer is dropped (it resyncs).
        batch_events: events encoded and written to a viewer between two yields to the loop.

    Raises:
        FileExistsError: on entry, when a live session already serves on ``path``.
    """

    def __init__(
        self,
        bus: EventBus,
        *,
        session: str,
        path: Path | None = None,
        execute: Executor | None = None,
        read_only: bool = False,
        description: str = "",
        max_pending: int = 250_000,
        hard_limit: int = 500_000,
        batch_events: int = 256,
    ) -> None:
        self.bus = bus
        self.session = session
        self.path = path or socket_path_for(session)
        self.read_only = read_only or execute is None
        self.description = description
        self.max_pending = max_pending
        self.hard_limit = hard_limit
        self.batch_events = max(1, batch_events)
        self._execute_command = execute
        self._server: asyncio.Server | None = None
        self._clients: dict[_Client, asyncio.Task[None]] = {}
        self._connections = 0
        self._refused_peers = 0
        self._commands_ok = 0
        self._commands_refused = 0
        self._rejected: Counter[str] = Counter()
        self.encoded = EncodedEvents()
        """Each event's bytes, shared by every viewer."""

    @property
    def info_path(self) -> Path:
        """The discovery sidecar next to the socket."""
        return self.path.with_suffix(_INFO_SUFFIX)

    async def __aenter__(self) -> SocketServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Bind the socket (replacing a stale one) and accept viewers."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if _probe(self.path):
                raise FileExistsError(errno.EADDRINUSE, "a live session already serves here", str(self.path))
            log.info("replacing stale socket %s", self.path)
            self.path.unlink()
        # Each type's reader and writer is built on first use otherwise, 5-80 ms of the loop for
        # whoever meets it first: the first viewer's snapshot held the loop 51 ms at 100,000 jobs.
        await asyncio.to_thread(warm_up)
        # Whole before the socket answers: a viewer that found the socket first read a session
        # without its pid (the info file not yet written, or half written).
        info = {"session": self.session, "pid": os.getpid(), "started_at": time.time(), "description": self.description}
        write_whole(self.info_path, json.dumps(info), mode=0o600)
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.path))
        # The directory is 0700 already; the socket's own mode is the second lock.
        self.path.chmod(0o600)
        log.info("serving session %s on %s", self.session, self.path)

    async def aclose(self) -> None:
        """Stop accepting, let each viewer receive what it was sent, then disconnect it."""
        if self._server is not None:
            self._server.close()
        for client in list(self._clients):
            client.subscription.close(reason="server closing")
        tasks = list(self._clients.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=_FLUSH_TIMEOUT)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        for path in (self.path, self.info_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def statistics(self) -> ServerStatistics:
        """Connected viewers and the counters of commands and rejected messages."""
        return ServerStatistics(
            clients=tuple(client.statistics() for client in self._clients),
            connections_total=self._connections,
            refused_peers=self._refused_peers,
            commands_ok=self._commands_ok,
            commands_refused=self._commands_refused,
            rejected=dict(self._rejected),
        )

    def _reject(self, client: _Client, kind: str, reason: str) -> None:
        self._rejected[kind] += 1
        log.warning("%s: rejected a message (%s): %s", client.name, kind, reason)

    def _execute(self, command: Command) -> CommandAcked:
        if self.read_only or self._execute_command is None:
            self._commands_refused += 1
            return CommandAcked(
                at=time.time(), command_id=command.command_id, ok=False, message="this session is read-only"
            )
        ack = self._execute_command(command)
        if ack.ok:
            self._commands_ok += 1
        else:
            self._commands_refused += 1
        return ack

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        credentials = _peer_credentials(writer)
        if credentials is None:
            # Who is at the other end is unknown, so it may be anyone: refuse, never assume.
            self._refused_peers += 1
            log.warning("refused a viewer whose credentials could not be read")
            writer.close()
            return
        pid = credentials[0]
        if credentials[1] not in (os.getuid(), 0):
            self._refused_peers += 1
            log.warning("refused a viewer of uid %d (pid %d): not this session's owner", credentials[1], pid)
            writer.close()
            return
        name = f"socket-viewer-{self._connections}(pid {pid})"
        # Made over several turns of the loop: a viewer may attach to 100,000 jobs at any time.
        subscription = await self.bus.subscribe_gradually(
            name=name, max_pending=self.max_pending, hard_limit=self.hard_limit
        )
        client = _Client(self, reader, writer, name, pid, subscription)
        task = asyncio.current_task()
        assert task is not None
        self._clients[client] = task
        log.info("%s attached", client.name)
        pump = asyncio.create_task(client.pump_events(), name=f"socket[{client.name}].events")
        commands = asyncio.create_task(client.read_commands(), name=f"socket[{client.name}].commands")
        try:
            await asyncio.wait((pump, commands), return_when=asyncio.FIRST_COMPLETED)
            if commands.done() and not pump.done():
                # The viewer hung up or broke framing: stop sending to it.
                client.subscription.close(reason="viewer left")
            await asyncio.wait((pump,), timeout=_FLUSH_TIMEOUT)
        except (ConnectionError, OSError) as exc:
            log.info("%s: connection error: %s", client.name, exc)
        finally:
            for task_ in (pump, commands):
                task_.cancel()
            await asyncio.gather(pump, commands, return_exceptions=True)
            client.subscription.close(reason="viewer left")
            del self._clients[client]
            writer.close()
            try:
                async with asyncio.timeout(_FLUSH_TIMEOUT):
                    await writer.wait_closed()
            except (ConnectionError, OSError):
                pass
            except TimeoutError:
                # A viewer that stopped reading must not hold the session's shutdown.
                writer.transport.abort()
            log.info("%s detached", client.name)
