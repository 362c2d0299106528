"""Messages the bus worker posts to the app."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from monitor_core import CommandAcked

__all__ = ["CommandAnswered", "SourceEnded"]


@dataclass
class SourceEnded(Message):
    """The event source has no more events (the session ended or the stream closed)."""

    reason: str


@dataclass
class CommandAnswered(Message):
    """A command sent to the session came back acknowledged (or refused)."""

    description: str
    """What was asked, in words."""
    ack: CommandAcked
