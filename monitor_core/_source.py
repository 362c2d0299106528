"""What a viewer reads from: a stream of bus events and a way to send commands.

A source yields a :class:`~monitor_core.Snapshot` first, and a fresh one whenever it had
to resync (after an overflow or a reconnect), then deltas. :class:`ConnectionChanged`
items tell the viewer when a remote source lost or regained its session.
"""

from __future__ import annotations

import abc
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ._bus import EventBus
from ._commands import Command, execute_command
from ._events import CommandAcked, Event
from ._scheduler import Scheduler

__all__ = ["ConnectionChanged", "EventSource", "InProcessSource"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionChanged:
    """A viewer-side fact: the source lost or regained its session."""

    at: float
    connected: bool
    reason: str = ""


class EventSource(abc.ABC):
    """A session's events, and a way to command it."""

    read_only: bool = False
    """True when commands are refused (a shared screen)."""
    description: str = ""
    """Where the events come from, for the viewer's title."""

    @abc.abstractmethod
    def events(self) -> AsyncIterator[Event | ConnectionChanged]:
        """Snapshot, then deltas, for as long as the source lasts."""

    @abc.abstractmethod
    async def send(self, command: Command) -> CommandAcked:
        """Carry out a command in the session and return its acknowledgement."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class InProcessSource(EventSource):
    """A session's bus in this very process (``--demo``).

    Args:
        bus: the session's bus.
        scheduler: the session's scheduler, which carries out commands.
        read_only: refuse commands.
    """

    def __init__(self, bus: EventBus, scheduler: Scheduler, *, read_only: bool = False) -> None:
        self._bus = bus
        self._scheduler = scheduler
        self.read_only = read_only
        self.description = f"session {scheduler.session} (in this process)"

    async def events(self) -> AsyncIterator[Event | ConnectionChanged]:
        while True:
            subscription = self._bus.subscribe(name="viewer")
            async for event in subscription:
                yield event
            if subscription.closed_reason is None or not subscription.closed_reason.startswith("overflow"):
                return
            # Fell too far behind: start over from a fresh snapshot.

    async def send(self, command: Command) -> CommandAcked:
        if self.read_only:
            return CommandAcked(at=time.time(), command_id=command.command_id, ok=False, message="read-only viewer")
        return execute_command(self._scheduler, command)
