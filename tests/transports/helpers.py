"""Small helpers shared by the transport tests."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeAlias, cast

from monitor_core import ConnectionChanged, Event, EventSource, SessionEnded
from monitor_core.transports import StateFold


@dataclass
class Watched:
    """What a viewer saw."""

    fold: StateFold = field(default_factory=StateFold)
    items: list[Event | ConnectionChanged] = field(default_factory=list)

    @property
    def connection_changes(self) -> list[ConnectionChanged]:
        return [item for item in self.items if isinstance(item, ConnectionChanged)]

    @property
    def ended(self) -> list[SessionEnded]:
        return [item for item in self.items if isinstance(item, SessionEnded)]


async def watch(source: EventSource, watched: Watched, *, until_ended: bool = True) -> Watched:
    """Fold a source's events in until it ends (or a SessionEnded when ``until_ended``)."""
    stream: AsyncIterator[Event | ConnectionChanged] = source.events()
    async for item in stream:
        watched.items.append(item)
        if not isinstance(item, ConnectionChanged):
            watched.fold.apply(item)
        if until_ended and isinstance(item, SessionEnded):
            break
    return watched


Stream: TypeAlias = AsyncGenerator[Event | ConnectionChanged, None]


def stream_of(source: EventSource) -> Stream:
    """A source's events as the async generator every source here returns (closable)."""
    return cast(Stream, source.events())


async def next_item(stream: Stream) -> Event | ConnectionChanged:
    """The next item, as a coroutine a task can run."""
    return await anext(stream)


async def wait_for(predicate: Callable[[], bool], limit: float = 30.0) -> None:
    """Wait until ``predicate()`` holds about state that other processes and tasks change."""
    async with asyncio.timeout(limit):
        # Nothing signals these conditions (a file, another process's effect): look again shortly.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def spawn(
    command: list[str], stderr: IO[bytes] | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a process (a session under test)."""
    return subprocess.Popen(command, stderr=stderr, env=env)


def read_summary(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


async def wait_process(process: subprocess.Popen[bytes], limit: float = 60.0) -> int:
    return await asyncio.to_thread(process.wait, limit)
