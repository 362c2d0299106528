"""The viewer's side of MQTT: one session's events, or every session's under a prefix.

On each connection the source subscribes, collects the retained state (it knows it has
all of it when a marker it publishes to itself comes back, since the broker delivers in
order), yields one :class:`~monitor_core.Snapshot` built from it, then live deltas. Watching
all sessions, job ids and backend names are prefixed ``<session>/`` so they stay apart,
and commands are routed back to the session a prefix names.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, Final

import aiomqtt

from .._commands import Command
from .._events import (
    BackendRecord,
    CommandAcked,
    Event,
    Heartbeat,
    JobAdded,
    JobRecord,
    OpRecord,
    SessionEnded,
    Snapshot,
)
from .._fold import StateFold
from .._source import ConnectionChanged, EventSource
from ._backoff import Backoff
from ._codec import WireError, decode_event, encode_command
from .mqtt_options import ALL_SESSIONS, LAST_WILL_REASON, MqttOptions, Topics, topic_level

__all__ = ["ALL_SESSIONS", "MqttSource"]

log = logging.getLogger(__name__)

_SYNC_TIMEOUT: Final = 5.0
_ACK_TIMEOUT: Final = 10.0


def _prefixed(value: Any, session: str) -> Any:
    """An event or record with its job ids and backend names under ``<session>/``."""
    changes: dict[str, Any] = {}
    for item in dataclasses.fields(value):
        current = getattr(value, item.name)
        if (item.name in ("job_id", "backend") and isinstance(current, str)) or (
            item.name == "name" and isinstance(value, BackendRecord)
        ):
            changes[item.name] = f"{session}/{current}"
        elif item.name == "job_ids":
            changes[item.name] = tuple(f"{session}/{job_id}" for job_id in current)
        elif isinstance(current, (JobRecord, OpRecord, BackendRecord)):
            changes[item.name] = _prefixed(current, session)
    return dataclasses.replace(value, **changes)


def _unprefixed(command: Command) -> tuple[str, Command]:
    """The session a prefixed command is for, and the command in that session's terms.

    Raises:
        ValueError: no ``<session>/`` prefix.
    """
    field_name = "job_id" if hasattr(command, "job_id") else "backend"
    value: str = getattr(command, field_name)
    session, sep, rest = value.partition("/")
    if not sep:
        raise ValueError(f"{value!r} does not name its session (expected <session>/{value})")
    return session, dataclasses.replace(command, **{field_name: rest})  # type: ignore[arg-type]


class _Sessions:
    """Per-session folds of what the broker holds."""

    def __init__(self) -> None:
        self.folds: dict[str, StateFold] = {}
        self.ended: dict[str, SessionEnded | None] = {}

    def fold(self, session: str) -> StateFold:
        fold = self.folds.get(session)
        if fold is None:
            fold = self.folds[session] = StateFold(session)
        return fold


class MqttSource(EventSource):
    """Events of one session (or all) through an MQTT broker, surviving broker restarts.

    Args:
        options: the broker.
        session: a session's name, or ``"all"``.
        read_only: refuse to send commands.
        follow: keep watching after the session ends (it may be restarted).
        backoff: reconnect delays (default 0.2s doubling to 5s).
    """

    def __init__(
        self,
        options: MqttOptions,
        session: str = ALL_SESSIONS,
        *,
        read_only: bool = False,
        follow: bool = True,
        backoff: Backoff | None = None,
    ) -> None:
        self.options = options
        self.session = session
        self.all = session == ALL_SESSIONS
        self.read_only = read_only
        self.follow = follow
        self.description = f"{options.describe()} session {session}"
        self._backoff = backoff or Backoff(base=0.2, cap=5.0)
        self._client: aiomqtt.Client | None = None
        self._acks: dict[str, asyncio.Future[CommandAcked]] = {}
        self._identifier = f"ganga-monitor-viewer-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.rejected: Counter[str] = Counter()
        """Messages from the broker rejected, by kind."""
        self.connects = 0

    @property
    def _sync_topic(self) -> str:
        return f"{self.options.prefix}/_viewer/{self._identifier}/sync"

    def _filter(self) -> str:
        return f"{self.options.prefix}/+/#" if self.all else f"{Topics(self.options.prefix, self.session).root}/#"

    def _decode(self, message: aiomqtt.Message) -> tuple[str, list[str], Event] | None:
        """The session, the topic's remaining levels and the event; ``None`` for what is not ours."""
        levels = message.topic.value.split("/")
        prefix_levels = len(self.options.prefix.split("/"))
        if len(levels) < prefix_levels + 2:
            return None
        session, rest = levels[prefix_levels], levels[prefix_levels + 1 :]
        if session.startswith("_") or rest[0] == "command" or not message.payload:
            # Viewers' markers, other viewers' commands, and cleared retained topics.
            return None
        payload = message.payload
        body = payload if isinstance(payload, (bytes, str)) else str(payload)
        try:
            event = decode_event(body)
        except WireError as exc:
            self.rejected[exc.kind] += 1
            log.warning("%s: rejected a message on %s (%s): %s", self.description, message.topic, exc.kind, exc)
            return None
        return session, rest, event

    def _snapshot(self, sessions: _Sessions) -> Snapshot:
        now = time.time()
        if not self.all:
            fold = sessions.fold(topic_level(self.session))
            fold.session = self.session
            return fold.snapshot(now)
        jobs: list[JobRecord] = []
        ops: list[OpRecord] = []
        backends: list[BackendRecord] = []
        counters: Counter[str] = Counter()
        for name, fold in sorted(sessions.folds.items()):
            jobs.extend(_prefixed(job, name) for job in fold.jobs.values())
            ops.extend(_prefixed(op, name) for op in fold.ops.values())
            backends.extend(_prefixed(record, name) for record in fold.backends.values())
            counters.update(fold.counters)
        return Snapshot(
            at=now,
            session=ALL_SESSIONS,
            jobs=tuple(jobs),
            ops=tuple(ops),
            backends=tuple(backends),
            counters=dict(counters),
        )

    def _absorb(self, sessions: _Sessions, session: str, rest: list[str], event: Event) -> Event | None:
        """Fold a message in; return what a viewer should be told, if anything."""
        fold = sessions.fold(session)
        kind = rest[0]
        if kind == "ack":
            if isinstance(event, CommandAcked):
                waiter = self._acks.pop(event.command_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(event)
            return None
        if kind == "snapshot" and isinstance(event, Snapshot):
            # Operations, backends and counters only; jobs come on their own topics.
            jobs = fold.jobs
            fold.reset(event)
            fold.jobs = jobs
            return None
        if kind == "session":
            if isinstance(event, SessionEnded):
                sessions.ended[session] = event
                return event
            if isinstance(event, Heartbeat):
                sessions.ended[session] = None
                return event
            return None
        if kind == "job" and isinstance(event, JobAdded):
            known = fold.jobs.get(event.job.job_id)
            fold.apply(event)
            # The same change came on the events topic already; only news is passed on.
            return None if known is not None and known.status == event.job.status else event
        if isinstance(event, (Snapshot, CommandAcked)):
            return None
        fold.apply(event)
        return event

    async def _collect_retained(self, client: aiomqtt.Client, sessions: _Sessions) -> None:
        marker = uuid.uuid4().hex.encode()
        await client.subscribe(self._sync_topic, qos=1)
        await client.subscribe(self._filter(), qos=1)
        await client.publish(self._sync_topic, marker, qos=0)
        try:
            async with asyncio.timeout(_SYNC_TIMEOUT):
                async for message in client.messages:
                    if message.topic.value == self._sync_topic:
                        if message.payload == marker:
                            return
                        continue
                    decoded = self._decode(message)
                    if decoded is not None:
                        self._absorb(sessions, *decoded)
        except TimeoutError:
            # A broker that forbids publishing the marker: go on with what arrived.
            log.warning("%s: no end-of-retained marker within %.0fs", self.description, _SYNC_TIMEOUT)

    async def events(self) -> AsyncIterator[Event | ConnectionChanged]:
        announced_down = False
        while True:
            sessions = _Sessions()
            try:
                async with self.options.client(self._identifier) as client:
                    await self._collect_retained(client, sessions)
                    self._backoff.reset()
                    self.connects += 1
                    self._client = client
                    announced_down = False
                    yield ConnectionChanged(at=time.time(), connected=True, reason=f"subscribed to {self.description}")
                    yield self._snapshot(sessions)
                    ended = None if self.all else sessions.ended.get(topic_level(self.session))
                    if ended is not None:
                        yield self._ending(ended)
                        if ended.reason != LAST_WILL_REASON and not self.follow:
                            return
                    async for message in client.messages:
                        decoded = self._decode(message)
                        if decoded is None:
                            continue
                        session, rest, event = decoded
                        was_ended = sessions.ended.get(session) is not None
                        told = self._absorb(sessions, session, rest, event)
                        if told is None:
                            continue
                        if self.all:
                            if isinstance(told, (SessionEnded, Heartbeat)):
                                continue
                            yield _prefixed(told, session)
                            continue
                        if isinstance(told, Heartbeat) and was_ended:
                            # The session is back (restarted): start the viewer over from the present.
                            yield ConnectionChanged(at=time.time(), connected=True, reason="the session is back")
                            yield self._snapshot(sessions)
                            continue
                        if isinstance(told, SessionEnded):
                            yield self._ending(told)
                            if told.reason != LAST_WILL_REASON and not self.follow:
                                return
                            continue
                        yield told
            except aiomqtt.MqttError as exc:
                self._client = None
                self._fail_pending(f"broker connection lost: {exc}")
                if not announced_down:
                    announced_down = True
                    yield ConnectionChanged(at=time.time(), connected=False, reason=f"broker unreachable: {exc}")
                await asyncio.sleep(self._backoff.next_delay())
            finally:
                self._client = None

    def _ending(self, ended: SessionEnded) -> SessionEnded | ConnectionChanged:
        """What a viewer is told of a session's end: a last will only says it is out of reach.

        A broker sends the will when the session vanishes but also when the broker itself
        stops; either way the session may be back, so the viewer keeps watching for it.
        """
        if ended.reason == LAST_WILL_REASON:
            return ConnectionChanged(at=ended.at, connected=False, reason=f"session {self.session}: {ended.reason}")
        return ended

    def _fail_pending(self, reason: str) -> None:
        for command_id, waiter in self._acks.items():
            if not waiter.done():
                waiter.set_result(CommandAcked(at=time.time(), command_id=command_id, ok=False, message=reason))
        self._acks.clear()

    async def send(self, command: Command) -> CommandAcked:
        """Publish a command to its session and wait for the session's acknowledgement."""
        refused = CommandAcked(at=time.time(), command_id=command.command_id, ok=False, message="")
        if self.read_only:
            return dataclasses.replace(refused, message="read-only viewer")
        client = self._client
        if client is None:
            return dataclasses.replace(refused, message="not connected to the broker")
        session = self.session
        if self.all:
            try:
                session, command = _unprefixed(command)
            except ValueError as exc:
                return dataclasses.replace(refused, message=str(exc))
        waiter: asyncio.Future[CommandAcked] = asyncio.get_running_loop().create_future()
        self._acks[command.command_id] = waiter
        try:
            await client.publish(Topics(self.options.prefix, session).command, encode_command(command), qos=1)
            async with asyncio.timeout(_ACK_TIMEOUT):
                return await waiter
        except (aiomqtt.MqttError, TimeoutError) as exc:
            return dataclasses.replace(refused, message=f"no acknowledgement: {exc!r}")
        finally:
            self._acks.pop(command.command_id, None)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            self._fail_pending("closed")
