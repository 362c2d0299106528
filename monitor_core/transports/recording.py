"""Recordings of the bus: gzip-compressed JSON lines in the wire schema, a snapshot first.

A session records its own bus (:class:`BusRecorder`, ``ganga-monitor-sim --record``); a
viewer records what it receives (:class:`RecordingSource`, ``ganga-monitor-tui --record``).
:class:`ReplaySource` plays a recording back as an :class:`~monitor_core.EventSource`, at
any speed or step by step, and seeks by rebuilding the state from the last snapshot
before the target and the deltas after it. A damaged recording plays up to the damage
and says where it stopped.
"""

from __future__ import annotations

import asyncio
import bisect
import gzip
import logging
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

from .._bus import EventBus, SubscriptionClosed
from .._commands import Command
from .._events import CommandAcked, Event, SessionEnded, Snapshot
from .._fold import StateFold
from .._source import ConnectionChanged, EventSource, SourceFailed
from ._codec import WireError, decode_event, encode_event

__all__ = [
    "BusRecorder",
    "Recording",
    "RecordingDamage",
    "RecordingSource",
    "RecordingWriter",
    "ReplaySource",
    "load_recording",
]

log = logging.getLogger(__name__)

_FLUSH_EVERY: Final = 1.0
"""Seconds between sync flushes, so a killed recorder leaves a readable file."""
_MAX_GAP: Final = 5.0
"""Longest pause a replay makes between two events, in recorded seconds; idle spans are cut."""


class RecordingWriter:
    """Writes events to a recording; nothing before the first snapshot is kept.

    Args:
        path: the file (``.jsonl.gz``); replaced if it exists.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: gzip.GzipFile = gzip.open(self.path, "wb", compresslevel=5)  # noqa: SIM115 - closed in close()
        self._started = False
        self._last_flush = time.monotonic()
        self.written = 0
        """Events written so far."""

    def write(self, events: list[Event]) -> None:
        """Append events (blocking: call it from a thread for big batches)."""
        lines = []
        for event in events:
            if not self._started and not isinstance(event, Snapshot):
                continue
            self._started = True
            lines.append(encode_event(event) + b"\n")
        if lines:
            self._file.write(b"".join(lines))
            self.written += len(lines)
        if time.monotonic() - self._last_flush >= _FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Make what is written readable even if the process dies next."""
        self._file.flush()  # gzip's flush() is a zlib sync flush
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Finish the compressed stream."""
        self._file.close()


class BusRecorder:
    """Records a bus from now on, as an async context manager, through its own subscription.

    Args:
        bus: the bus.
        path: the recording.
    """

    def __init__(self, bus: EventBus, path: Path) -> None:
        self._bus = bus
        self._writer = RecordingWriter(path)
        self._task: asyncio.Task[None] | None = None
        self._subscription = bus.subscribe(name=f"recorder({path})")

    async def __aenter__(self) -> BusRecorder:
        self._task = asyncio.create_task(self._run(), name=f"recorder[{self._writer.path.name}]")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._subscription.close("recording stopped")
        if self._task is not None:
            await self._task
        await asyncio.to_thread(self._writer.close)

    async def _run(self) -> None:
        while True:
            try:
                event: Event | None = await self._subscription.receive()
            except SubscriptionClosed:
                return
            batch = []
            while event is not None:
                batch.append(event)
                event = self._subscription.receive_nowait()
            # Compressing a large snapshot takes a while: off the loop, so the session runs on.
            await asyncio.to_thread(self._writer.write, batch)


class RecordingSource(EventSource):
    """Another source's events, written to a recording as they pass.

    Args:
        inner: the source watched.
        path: the recording.
    """

    def __init__(self, inner: EventSource, path: Path) -> None:
        self.inner = inner
        self.read_only = inner.read_only
        self.description = f"{inner.description}, recording to {path}"
        self._writer = RecordingWriter(path)

    async def events(self) -> AsyncIterator[Event | ConnectionChanged]:
        try:
            async for item in self.inner.events():
                if not isinstance(item, ConnectionChanged):
                    self._writer.write([item])
                yield item
        finally:
            self._writer.close()

    @property
    def failure(self) -> str | None:  # type: ignore[override]
        return self.inner.failure

    def resync(self) -> bool:
        return self.inner.resync()

    async def send(self, command: Command) -> CommandAcked:
        return await self.inner.send(command)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass(frozen=True, slots=True)
class RecordingDamage:
    """Where and why a recording could not be read further."""

    line: int
    """The first line that could not be read (1-based)."""
    reason: str

    def __str__(self) -> str:
        return f"recording damaged at line {self.line}: {self.reason}; replayed the {self.line - 1} lines before it"


@dataclass(frozen=True, slots=True)
class Recording:
    """A recording's events, the positions of its snapshots, and its damage if any."""

    events: tuple[Event, ...]
    snapshots: tuple[int, ...]
    damage: RecordingDamage | None

    @property
    def start(self) -> float:
        return self.events[0].at if self.events else 0.0

    @property
    def end(self) -> float:
        return self.events[-1].at if self.events else 0.0


def load_recording(path: Path) -> Recording:
    """Read and validate a recording, up to its first damaged line.

    Raises:
        OSError: the file cannot be opened.
    """
    events: list[Event] = []
    snapshots: list[int] = []
    damage: RecordingDamage | None = None
    line_number = 0
    with gzip.open(path, "rb") as stream:
        try:
            for line_number, line in enumerate(stream, start=1):
                if not line.endswith(b"\n"):
                    damage = RecordingDamage(line_number, "the last line is cut short")
                    break
                event = decode_event(line)
                if not events and not isinstance(event, Snapshot):
                    damage = RecordingDamage(line_number, "a recording must start with a Snapshot")
                    break
                if isinstance(event, Snapshot):
                    snapshots.append(len(events))
                events.append(event)
        except WireError as exc:
            damage = RecordingDamage(line_number, str(exc))
        except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
            damage = RecordingDamage(line_number + 1, f"compressed data unreadable: {exc}")
    if damage is not None:
        log.warning("%s: %s", path, damage)
    return Recording(tuple(events), tuple(snapshots), damage)


class ReplaySource(EventSource):
    """Plays a recording back; always read-only.

    The control methods (:meth:`set_speed`, :meth:`pause`, :meth:`resume`, :meth:`step`,
    :meth:`seek`) take effect at once, also while :meth:`events` waits between events.

    Raises:
        SourceFailed: on construction, when the file cannot be read or holds no recording.

    Args:
        path: the recording.
        speed: 1.0 plays in recorded time, 10.0 ten times faster, ``0`` as fast as read.
        paused: start paused (step with :meth:`step`).
        hold_at_end: after the last event, wait for a seek instead of ending the stream.
    """

    def __init__(self, path: Path, *, speed: float = 1.0, paused: bool = False, hold_at_end: bool = False) -> None:
        self.path = Path(path)
        try:
            self.recording = load_recording(self.path)
        except OSError as exc:
            raise SourceFailed(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        if not self.recording.events:
            damage = self.recording.damage
            raise SourceFailed(f"{self.path} is not a recording ({damage.reason if damage else 'it is empty'})")
        self.read_only = True
        self.description = f"replay of {self.path}"
        self.hold_at_end = hold_at_end
        self._speed = speed
        self._paused = paused
        self._steps = 0
        self._seek_to: float | None = None
        self._changed = asyncio.Event()
        self.position = self.recording.start
        """Recorded time of the last event given out."""
        self.finished = False

    @property
    def damage(self) -> RecordingDamage | None:
        """Why the recording ends early, or ``None`` when it is whole."""
        return self.recording.damage

    @property
    def speed(self) -> float:
        return self._speed

    @property
    def paused(self) -> bool:
        return self._paused

    def set_speed(self, speed: float) -> None:
        """Change the speed (``0`` = no waiting).

        Raises:
            ValueError: a negative speed.
        """
        if speed < 0:
            raise ValueError("the replay speed cannot be negative")
        self._speed = speed
        self._changed.set()

    def pause(self) -> None:
        """Hold at the current event."""
        self._paused = True
        self._changed.set()

    def resume(self) -> None:
        """Play on at the set speed."""
        self._paused = False
        self._changed.set()

    def step(self, events: int = 1) -> None:
        """While paused, give out the next ``events`` events."""
        self._steps += events
        self._changed.set()

    def seek(self, at: float) -> None:
        """Jump to a recorded time; the stream continues with a snapshot of that moment."""
        self._seek_to = min(max(at, self.recording.start), self.recording.end)
        self._changed.set()

    def seek_relative(self, seconds: float) -> None:
        """Jump forward (or back, when negative) by recorded seconds."""
        self.seek(self.position + seconds)

    def state_at(self, at: float) -> tuple[Snapshot, int]:
        """The state at a recorded time, and the index of the first event after it."""
        events = self.recording.events
        end = bisect.bisect_right([event.at for event in events], at)
        base = bisect.bisect_right(self.recording.snapshots, max(end - 1, 0)) - 1
        start = self.recording.snapshots[max(base, 0)]
        fold = StateFold()
        for event in events[start : max(end, start + 1)]:
            fold.apply(event)
        return fold.snapshot(at), max(end, start + 1)

    async def _wait(self, seconds: float | None) -> bool:
        """Wait up to ``seconds`` (forever when ``None``); ``True`` if a control call came first."""
        self._changed.clear()
        if seconds is not None and seconds <= 0:
            return False
        try:
            async with asyncio.timeout(seconds):
                await self._changed.wait()
        except TimeoutError:
            return False
        return True

    async def events(self) -> AsyncIterator[Event | ConnectionChanged]:
        events = self.recording.events
        index = 0
        previous: float | None = None
        while True:
            if self._seek_to is not None:
                target, self._seek_to = self._seek_to, None
                snapshot, index = self.state_at(target)
                self.position, previous = target, target
                self.finished = False
                yield snapshot
                continue
            if index >= len(events):
                if not self.finished:
                    self.finished = True
                    if self.damage is not None:
                        self.failure = str(self.damage)
                        yield ConnectionChanged(at=self.position, connected=False, reason=str(self.damage))
                        if not any(isinstance(event, SessionEnded) for event in events[-1:]):
                            yield SessionEnded(at=self.position, reason=str(self.damage))
                if not self.hold_at_end:
                    return
                await self._wait(None)
                continue
            event = events[index]
            if self._paused and self._steps == 0:
                await self._wait(None)
                continue
            if not self._paused and previous is not None and self._speed > 0:
                delay = min(max(event.at - previous, 0.0), _MAX_GAP) / self._speed
                if await self._wait(delay):
                    # A control call: re-plan (the remaining wait is shorter than a gap, so restart it).
                    continue
            if self._paused:
                self._steps -= 1
            index += 1
            previous = self.position = event.at
            yield event

    async def send(self, command: Command) -> CommandAcked:
        return CommandAcked(
            at=time.time(), command_id=command.command_id, ok=False, message="a replay takes no commands"
        )
