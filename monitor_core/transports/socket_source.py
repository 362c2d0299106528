"""The viewer's side of the Unix-socket transport: an :class:`~monitor_core.EventSource`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from .._commands import Command, SelectEvents
from .._events import CommandAcked, Event, SessionEnded
from .._source import ConnectionChanged, EventSource, SourceFailed
from ._backoff import Backoff
from ._codec import MAX_MESSAGE_BYTES, WireError, decode_event, encode_command
from ._framing import FrameError, encode_frame, read_frame

__all__ = ["SocketSource"]

log = logging.getLogger(__name__)

_ACK_TIMEOUT: Final = 10.0


class SocketSource(EventSource):
    """Events of a session serving on a Unix socket, surviving its restarts.

    While the session is unreachable the source yields ``ConnectionChanged(connected=False)``
    once and retries with capped, jittered exponential backoff; on reconnect it yields
    ``ConnectionChanged(connected=True)`` and the server's fresh snapshot follows.

    Args:
        path: the session's socket.
        read_only: refuse to send commands.
        follow: keep waiting for the session after it ends or vanishes; when ``False``
            the stream ends after :class:`~monitor_core.SessionEnded`.
        backoff: reconnect delays (default 0.2s doubling to 5s).
        max_message_bytes: the largest frame accepted from the session.
        kinds: ask the session, on every connection, to send only events of these types (wire
            names; snapshots always come); ``None``: every event. A session that cannot select
            says so, once, in the log, and sends everything.
    """

    def __init__(
        self,
        path: Path,
        *,
        read_only: bool = False,
        follow: bool = True,
        backoff: Backoff | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        kinds: tuple[str, ...] | None = None,
    ) -> None:
        self.path = Path(path)
        self.kinds = kinds
        self._selections: set[str] = set()
        """Ids of selections sent whose answer has not come yet."""
        self.read_only = read_only
        self.follow = follow
        self.description = f"socket {self.path}"
        self._backoff = backoff or Backoff(base=0.2, cap=5.0)
        self._max_bytes = max_message_bytes
        self._writer: asyncio.StreamWriter | None = None
        self._acks: dict[str, asyncio.Future[CommandAcked]] = {}
        self.rejected: Counter[str] = Counter()
        """Messages from the session rejected, by kind."""
        self.connects = 0
        """Successful connections so far."""
        self.resyncs = 0
        """Times the viewer asked to start over from a fresh snapshot."""
        self._resync_requested = False
        self._closed = False

    def check_target(self) -> None:
        """Fail fast when nothing can ever answer at the path.

        Raises:
            SourceFailed: the path does not exist, or is not a socket.
        """
        if not self.path.exists():
            raise SourceFailed(f"no session socket at {self.path} (nothing there)")
        if not self.path.is_socket():
            raise SourceFailed(f"{self.path} is not a socket")

    def resync(self) -> bool:
        """Reconnect at once: the session sends a fresh snapshot to every new connection."""
        writer = self._writer
        if writer is None:
            return False
        self.resyncs += 1
        self._resync_requested = True
        writer.close()
        return True

    async def events(self) -> AsyncIterator[Event | ConnectionChanged]:
        announced_down = False
        while not self._closed:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.path))
            except OSError as exc:
                if not announced_down:
                    announced_down = True
                    yield ConnectionChanged(at=time.time(), connected=False, reason=f"cannot reach {self.path}: {exc}")
                await asyncio.sleep(self._backoff.next_delay())
                continue
            self._backoff.reset()
            self.connects += 1
            announced_down = False
            self._writer = writer
            if self.kinds is not None:
                self._select(writer, self.kinds)
            yield ConnectionChanged(at=time.time(), connected=True, reason=f"attached to {self.path}")
            ended = False
            reason = "the session closed the connection"
            try:
                async for event in self._read(reader):
                    if isinstance(event, SessionEnded):
                        ended = True
                        reason = f"session ended: {event.reason}"
                    yield event
            except (FrameError, OSError) as exc:
                reason = f"connection lost: {exc}"
            finally:
                self._writer = None
                self._fail_pending(reason)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            if (ended and not self.follow) or self._closed:
                # Closed by its viewer: attaching again would fetch a whole snapshot for no one
                # (a viewer quitting a 100,000-job demo doubled its memory doing so).
                return
            if self._resync_requested and not ended:
                self._resync_requested = False
                continue
            announced_down = True
            yield ConnectionChanged(at=time.time(), connected=False, reason=reason)
            await asyncio.sleep(self._backoff.next_delay())

    async def _read(self, reader: asyncio.StreamReader) -> AsyncIterator[Event]:
        while True:
            body = await read_frame(reader, self._max_bytes)
            if body is None:
                return
            try:
                event = decode_event(body)
            except WireError as exc:
                self.rejected[exc.kind] += 1
                log.warning("%s: rejected a message (%s): %s", self.path, exc.kind, exc)
                continue
            if isinstance(event, CommandAcked) and event.command_id in self._selections:
                self._selections.discard(event.command_id)
                if not event.ok:
                    log.warning("%s: the session sends every event: %s", self.path, event.message)
                continue
            if isinstance(event, CommandAcked):
                waiter = self._acks.pop(event.command_id, None)
                if waiter is not None:
                    if not waiter.done():
                        waiter.set_result(event)
                    continue
            yield event

    def _select(self, writer: asyncio.StreamWriter, kinds: tuple[str, ...]) -> None:
        """Ask for these kinds only; the answer comes with the events (see :meth:`_read`)."""
        command = SelectEvents(kinds=kinds)
        self._selections.add(command.command_id)
        # Sent before the first read: the selection then applies from the first events on.
        writer.write(encode_frame(encode_command(command)))

    def _fail_pending(self, reason: str) -> None:
        for command_id, waiter in self._acks.items():
            if not waiter.done():
                waiter.set_result(CommandAcked(at=time.time(), command_id=command_id, ok=False, message=reason))
        self._acks.clear()

    async def send(self, command: Command) -> CommandAcked:
        """Send a command and wait for its acknowledgement (read while :meth:`events` is iterated)."""
        if self.read_only:
            return CommandAcked(at=time.time(), command_id=command.command_id, ok=False, message="read-only viewer")
        writer = self._writer
        if writer is None:
            return CommandAcked(at=time.time(), command_id=command.command_id, ok=False, message="not connected")
        waiter: asyncio.Future[CommandAcked] = asyncio.get_running_loop().create_future()
        self._acks[command.command_id] = waiter
        try:
            writer.write(encode_frame(encode_command(command)))
            await writer.drain()
            async with asyncio.timeout(_ACK_TIMEOUT):
                return await waiter
        except (OSError, TimeoutError) as exc:
            return CommandAcked(
                at=time.time(), command_id=command.command_id, ok=False, message=f"no acknowledgement: {exc!r}"
            )
        finally:
            self._acks.pop(command.command_id, None)

    async def aclose(self) -> None:
        self._closed = True
        if self._writer is not None:
            self._writer.close()
