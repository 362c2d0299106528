"""What a viewer reads from: a stream of bus events and a way to send commands.

A source yields a :class:`~monitor_core.Snapshot` first, and a fresh one whenever it had
to resync (after an overflow or a reconnect), then deltas. :class:`ConnectionChanged`
items tell the viewer when a remote source lost or regained its session.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ._bus import EventBus, Subscription
from ._commands import Command, execute_command
from ._events import CommandAcked, Event, SessionEnded
from ._scheduler import Scheduler

__all__ = ["ConnectionChanged", "EventSource", "InProcessSource", "SourceFailed"]

log = logging.getLogger(__name__)


class SourceFailed(Exception):
    """The source cannot give events at all (nothing at the path, not a recording); the text says why."""


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
    failure: str | None = None
    """Why the stream ended before its session did (a damaged recording), once it has."""

    @abc.abstractmethod
    def events(self) -> AsyncIterator[Event | ConnectionChanged]:
        """Snapshot, then deltas, for as long as the source lasts."""

    @abc.abstractmethod
    async def send(self, command: Command) -> CommandAcked:
        """Carry out a command in the session and return its acknowledgement."""

    def resync(self) -> bool:
        """Drop what is buffered and start over from a fresh snapshot; False when the source cannot.

        A viewer that fell behind calls it: the snapshot is cheaper than the events it skips.
        """
        return False

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
        self.resubscribed = 0
        """Times the subscription ended early and was taken up again from a snapshot."""
        self._subscription: Subscription | None = None

    async def events(self) -> AsyncIterator[Event | ConnectionChanged]:
        while True:
            subscription = self._subscription = self._bus.subscribe(name="viewer")
            ended = False
            async for event in subscription:
                ended = ended or isinstance(event, SessionEnded)
                yield event
            reason = subscription.closed_reason or "closed"
            if ended or reason == "bus closed":
                return
            # Overflow, or a resync asked for: never go silent, start over from a fresh snapshot.
            self.resubscribed += 1
            log.warning(
                "session %s: subscription ended (%s); resubscribing from a snapshot", self._scheduler.session, reason
            )

    def resync(self) -> bool:
        subscription = self._subscription
        if subscription is None or subscription.closed:
            return False
        subscription.close("resync: the viewer fell behind")
        return True

    async def send(self, command: Command) -> CommandAcked:
        if self.read_only:
            return CommandAcked(at=time.time(), command_id=command.command_id, ok=False, message="read-only viewer")
        return execute_command(self._scheduler, command)
