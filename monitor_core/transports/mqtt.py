"""The bus across machines: MQTT through aiomqtt and a broker such as mosquitto.

aiomqtt is pinned to its 2.x line (``client.messages`` is a property there; 3.0 makes it
an async generator). Topic tree, under a prefix (default ``ganga-monitor``)::

    <prefix>/<session>/session            retained: Heartbeat while alive, SessionEnded when
                                          it ends (also the last will if it dies)
    <prefix>/<session>/snapshot           retained: operations, backends and counters (no jobs)
    <prefix>/<session>/backend/<name>     retained: the backend's last LagSampled
    <prefix>/<session>/job/<backend>/<id> retained: the job's present record, as JobAdded
    <prefix>/<session>/events             every other delta, in order (not retained)
    <prefix>/<session>/command            viewers' commands, validated by the session
    <prefix>/<session>/ack                the session's CommandAcked answers

A late viewer sees the present at once from the retained topics. Every payload is one
message of the wire schema.

Job changes, job records and the session's status go to the broker at QoS 1: the broker
acknowledges each, and the bridge's awaiting that acknowledgement paces it (its own bus
subscription coalesces what can be rebuilt meanwhile). Operation progress, lag and the
summary snapshot go at QoS 0: each is superseded by the next. After any reconnection the
bridge publishes the whole present again (a fresh bus snapshot), so what a dropped
connection cost is made good by the retained topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final

import aiomqtt

from .._bus import EventBus, SubscriptionClosed
from .._commands import Command
from .._events import (
    CommandAcked,
    Event,
    Heartbeat,
    JobAdded,
    JobChanged,
    LagSampled,
    SessionEnded,
    Snapshot,
)
from .._fold import StateFold
from ._backoff import Backoff
from ._codec import WireError, command_id_of, decode_command, encode_event
from .mqtt_options import (
    DEFAULT_PREFIX,
    LAST_WILL_REASON,
    MqttOptions,
    Topics,
    add_mqtt_arguments,
    mqtt_options_from_args,
    topic_level,
)

__all__ = [
    "DEFAULT_PREFIX",
    "LAST_WILL_REASON",
    "MqttBridge",
    "MqttOptions",
    "Topics",
    "add_mqtt_arguments",
    "mqtt_options_from_args",
    "topic_level",
]

log = logging.getLogger(__name__)

_FLUSH_TIMEOUT: Final = 3.0

Executor = Callable[[Command], CommandAcked]


class MqttBridge:
    """Publishes a session's bus to a broker and carries viewers' commands back.

    Reconnects with capped, jittered backoff when the broker goes away, and republishes
    the whole retained state on each connection (a restarted broker may have lost it).
    Reads the bus through its own subscription, so a slow broker never slows the session.

    Args:
        bus: the session's bus.
        options: the broker.
        session: the session's name (a topic level).
        execute: carries out a validated command; ``None`` refuses every command.
        read_only: refuse every command.
    """

    def __init__(
        self,
        bus: EventBus,
        options: MqttOptions,
        *,
        session: str,
        execute: Executor | None = None,
        read_only: bool = False,
        backoff: Backoff | None = None,
    ) -> None:
        self.bus = bus
        self.options = options
        self.session = session
        self.topics = Topics(options.prefix, session)
        self.read_only = read_only or execute is None
        self._execute_command = execute
        self._backoff = backoff or Backoff(base=0.2, cap=5.0)
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._ended = False
        self.connected = asyncio.Event()
        """Set while connected to the broker."""
        self.connects = 0
        self.published = 0
        self.commands_ok = 0
        self.commands_refused = 0
        self.rejected: Counter[str] = Counter()
        """Commands rejected, by kind."""

    async def __aenter__(self) -> MqttBridge:
        self._task = asyncio.create_task(self._run(), name=f"mqtt-bridge[{self.session}]")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Publish what is pending (and that the session ended), then disconnect cleanly."""
        self._closing.set()
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            async with asyncio.timeout(_FLUSH_TIMEOUT):
                await asyncio.shield(self._task)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    def statistics(self) -> dict[str, Any]:
        """Counters for logs and tests."""
        return {
            "connected": self.connected.is_set(),
            "connects": self.connects,
            "published": self.published,
            "commands_ok": self.commands_ok,
            "commands_refused": self.commands_refused,
            "rejected": dict(self.rejected),
        }

    def _will(self) -> aiomqtt.Will:
        payload = encode_event(SessionEnded(at=time.time(), reason=LAST_WILL_REASON))
        return aiomqtt.Will(self.topics.status, payload, qos=1, retain=True)

    async def _run(self) -> None:
        identifier = f"ganga-monitor-session-{topic_level(self.session)}-{os.getpid()}"
        while not self._closing.is_set():
            try:
                async with self.options.client(identifier, will=self._will()) as client:
                    self._backoff.reset()
                    self.connects += 1
                    self.connected.set()
                    log.info("session %s connected to %s", self.session, self.options.describe())
                    await client.subscribe(self.topics.command, qos=1)
                    publisher = asyncio.create_task(self._publish_bus(client), name="mqtt-bridge.publish")
                    commands = asyncio.create_task(self._serve_commands(client), name="mqtt-bridge.commands")
                    try:
                        done, _ = await asyncio.wait((publisher, commands), return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for task in (publisher, commands):
                            task.cancel()
                        await asyncio.gather(publisher, commands, return_exceptions=True)
                    for task in done:
                        if not task.cancelled() and (error := task.exception()) is not None:
                            raise error
                    if publisher in done:
                        return
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                if self._closing.is_set():
                    return
                delay = self._backoff.next_delay()
                log.warning("session %s: broker %s: %s; retrying in %.1fs", self.session, self.options.host, exc, delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._closing.wait()
            finally:
                self.connected.clear()

    async def _publish(
        self, client: aiomqtt.Client, topic: str, event: Event, *, retain: bool = False, qos: int = 0
    ) -> None:
        self.published += 1
        await client.publish(topic, encode_event(event), qos=qos, retain=retain)

    async def _publish_state(self, client: aiomqtt.Client, fold: StateFold, at: float) -> None:
        for record in fold.jobs.values():
            await self._publish(
                client, self.topics.job(record.backend, record.job_id), JobAdded(at=at, job=record), retain=True, qos=1
            )
        for backend in fold.backends.values():
            await self._publish(
                client, self.topics.backend(backend.name), LagSampled(at=at, backend=backend), retain=True
            )
        await self._publish(client, self.topics.summary, fold.snapshot(at, with_jobs=False), retain=True)
        await self._publish_alive(client, fold, at)

    async def _publish_alive(self, client: aiomqtt.Client, fold: StateFold, at: float, seq: int = 0) -> None:
        final = sum(1 for record in fold.jobs.values() if record.status.is_final)
        active = sum(1 for record in fold.jobs.values() if record.status.is_active)
        heartbeat = Heartbeat(at=at, seq=seq, jobs_total=len(fold.jobs), jobs_active=active, jobs_final=final)
        self.published += 1
        # QoS 1 and awaited: the broker's acknowledgement paces the bridge, so a slow broker
        # makes the bridge's own subscription coalesce instead of piling up unsent messages.
        await client.publish(self.topics.status, encode_event(heartbeat), qos=1, retain=True)

    async def _publish_bus(self, client: aiomqtt.Client) -> None:
        subscription = self.bus.subscribe(name=f"mqtt-bridge({self.options.host})")
        fold = StateFold(self.session)
        closing = asyncio.create_task(self._closing.wait())
        receive: asyncio.Future[Event] | None = None
        try:
            while True:
                receive = asyncio.ensure_future(subscription.receive())
                done, _ = await asyncio.wait((receive, closing), return_when=asyncio.FIRST_COMPLETED)
                if receive not in done:
                    receive.cancel()
                    subscription.close("bridge closing")
                    # Drain what the session said before closing, then say it ended if it did not.
                    while (rest := subscription.receive_nowait()) is not None:
                        await self._forward(client, fold, rest)
                    if not self._ended:
                        ended = SessionEnded(at=time.time(), reason="the session stopped publishing")
                        await self._forward(client, fold, ended)
                    return
                try:
                    event: Event | None = receive.result()
                except SubscriptionClosed:
                    return
                while event is not None:
                    await self._forward(client, fold, event)
                    event = subscription.receive_nowait()
        finally:
            closing.cancel()
            subscription.close("bridge disconnected")
            if receive is not None:
                receive.cancel()
                with contextlib.suppress(asyncio.CancelledError, SubscriptionClosed):
                    await receive

    async def _forward(self, client: aiomqtt.Client, fold: StateFold, event: Event) -> None:
        topics = self.topics
        fold.apply(event)
        if isinstance(event, Snapshot):
            await self._publish_state(client, fold, event.at)
        elif isinstance(event, JobAdded):
            await self._publish(client, topics.job(event.job.backend, event.job.job_id), event, retain=True, qos=1)
        elif isinstance(event, JobChanged):
            await self._publish(client, topics.events, event, qos=1)
            record = fold.jobs[event.job_id]
            await self._publish(
                client,
                topics.job(record.backend, record.job_id),
                JobAdded(at=event.at, job=record),
                retain=True,
                qos=1,
            )
        elif isinstance(event, LagSampled):
            await self._publish(client, topics.backend(event.backend.name), event, retain=True)
        elif isinstance(event, Heartbeat):
            await self._publish(client, topics.summary, fold.snapshot(event.at, with_jobs=False), retain=True)
            await self._publish_alive(client, fold, event.at, event.seq)
        elif isinstance(event, SessionEnded):
            self._ended = True
            self.published += 1
            await client.publish(topics.status, encode_event(event), qos=1, retain=True)
        else:
            await self._publish(client, topics.events, event)

    async def _serve_commands(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            body = payload if isinstance(payload, bytes) else str(payload).encode()
            if not body:
                continue  # someone clearing a retained message: nothing to do
            if message.retain:
                # A retained command would run again at every reconnect of the session.
                self._reject("retained", "retained messages on the command topic are ignored")
                await self._ack(
                    client,
                    CommandAcked(
                        at=time.time(), command_id=command_id_of(body), ok=False, message="rejected: retained command"
                    ),
                )
                continue
            try:
                command = decode_command(body)
            except WireError as exc:
                self._reject(exc.kind, str(exc))
                await self._ack(
                    client,
                    CommandAcked(at=time.time(), command_id=command_id_of(body), ok=False, message=f"rejected: {exc}"),
                )
                continue
            await self._ack(client, self._execute(command))

    def _reject(self, kind: str, reason: str) -> None:
        self.rejected[kind] += 1
        log.warning("session %s: rejected a command message (%s): %s", self.session, kind, reason)

    def _execute(self, command: Command) -> CommandAcked:
        if self.read_only or self._execute_command is None:
            self.commands_refused += 1
            return CommandAcked(
                at=time.time(), command_id=command.command_id, ok=False, message="this session is read-only"
            )
        ack = self._execute_command(command)
        if ack.ok:
            self.commands_ok += 1
        else:
            self.commands_refused += 1
        return ack

    async def _ack(self, client: aiomqtt.Client, ack: CommandAcked) -> None:
        self.published += 1
        await client.publish(self.topics.ack, encode_event(ack), qos=1)
