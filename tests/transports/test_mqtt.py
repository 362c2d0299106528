"""The MQTT transport through a real mosquitto, against real `ganga-monitor-sim` processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from monitor_core import (
    Command,
    CommandAcked,
    ConnectionChanged,
    Event,
    EventSource,
    JobAdded,
    PauseBackend,
    RefreshJob,
    ResumeBackend,
    SessionEnded,
    Snapshot,
)
from monitor_core.transports import Backoff, decode_event, encode_command
from monitor_core.transports.mqtt import MqttOptions, Topics
from monitor_core.transports.mqtt_source import MqttSource

from .conftest import MQTT_PASSWORD, MQTT_USER, Broker, sim_command
from .helpers import Watched, read_summary, spawn, stream_of, wait_for, wait_process, watch

pytestmark = pytest.mark.mosquitto

FAST = Backoff(base=0.05, cap=0.5)


class _Resumed(EventSource):
    """An already started stream, as a source for :func:`watch`."""

    def __init__(self, stream: AsyncIterator[Event | ConnectionChanged]) -> None:
        self._stream = stream

    def events(self) -> AsyncIterator[Event | ConnectionChanged]:
        return self._stream

    async def send(self, command: Command) -> CommandAcked:
        raise NotImplementedError


class Sims:
    """`ganga-monitor-sim` processes started by a test, killed after it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, broker_url: str, *args: str) -> subprocess.Popen[bytes]:
        process = spawn(
            sim_command(
                "--name",
                name,
                "--state-dir",
                str(self.directory / name),
                "--mqtt",
                broker_url,
                "--summary",
                str(self.directory / f"{name}.json"),
                *args,
            ),
            stderr=(self.directory / f"{name}.stderr").open("ab"),
        )
        self.processes.append(process)
        return process

    def summary(self, name: str) -> dict[str, Any]:
        return read_summary(self.directory / f"{name}.json")

    def stderr(self, name: str) -> str:
        return (self.directory / f"{name}.stderr").read_text()


@pytest.fixture
def sims(run_dir: Path) -> Iterator[Sims]:
    started = Sims(run_dir)
    yield started
    for process in started.processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def _options(broker: Broker, **overrides: object) -> MqttOptions:
    return MqttOptions.from_url(broker.url, keepalive=2, **overrides)


async def test_viewer_follows_a_session_through_the_broker_and_commands_it(broker: Broker, sims: Sims) -> None:
    process = sims.start("alpha", broker.url, "--jobs", "10", "--exit-when-done", "--linger", "1")
    source = MqttSource(_options(broker), "alpha", follow=False, backoff=FAST)
    watched = Watched()
    viewer = asyncio.create_task(watch(source, watched))
    await wait_for(lambda: len(watched.fold.jobs) == 10)
    assert (await source.send(PauseBackend(backend="local"))).ok
    assert (await source.send(ResumeBackend(backend="local"))).ok
    refused = await source.send(RefreshJob(job_id="nope"))
    assert not refused.ok
    assert refused.message == "no job nope"
    await asyncio.wait_for(viewer, 60)
    assert await wait_process(process) == 0
    live = sims.summary("alpha")
    assert watched.fold.final_states() == live["final_states"]
    assert watched.ended[-1].reason == "every job is final"
    assert live["mqtt"]["commands_ok"] == 2
    assert live["mqtt"]["commands_refused"] == 1

    # A late viewer sees the present at once, from what the broker retained.
    late = MqttSource(_options(broker), "alpha", follow=False, backoff=FAST)
    items = [item async for item in late.events()]
    assert isinstance(items[0], ConnectionChanged)
    assert items[0].connected
    assert isinstance(items[1], Snapshot)
    assert {job.job_id: job.status.value for job in items[1].jobs} == live["final_states"]
    assert isinstance(items[2], SessionEnded)
    assert items[2].reason == "every job is final"


async def test_killed_session_is_reported_by_its_last_will(broker: Broker, sims: Sims) -> None:
    process = sims.start("doomed", broker.url, "--jobs", "4", "--local-mean-duration", "30", "--mqtt-keepalive", "1")
    source = MqttSource(_options(broker), "doomed", follow=False, backoff=FAST)
    watched = Watched()
    viewer = asyncio.create_task(watch(source, watched))
    await wait_for(lambda: len(watched.fold.jobs) == 4)
    assert not any("last will" in change.reason for change in watched.connection_changes)
    process.send_signal(signal.SIGKILL)
    await wait_for(lambda: any("last will" in change.reason for change in watched.connection_changes))
    lost = [change for change in watched.connection_changes if "last will" in change.reason]
    assert not lost[0].connected
    assert lost[0].reason.startswith("session doomed:")
    viewer.cancel()
    # A viewer arriving later hears the same from the retained will.
    late = MqttSource(_options(broker), "doomed", backoff=FAST)
    stream = stream_of(late)
    items = [await anext(stream) for _ in range(3)]
    await stream.aclose()
    assert isinstance(items[1], Snapshot)
    assert len(items[1].jobs) == 4
    assert isinstance(items[2], ConnectionChanged)
    assert "last will" in items[2].reason


async def test_broker_restart_resyncs_the_viewer_to_the_sessions_final_states(broker: Broker, sims: Sims) -> None:
    process = sims.start(
        "steady",
        broker.url,
        "--jobs",
        "10",
        "--local-mean-duration",
        "2.5",
        "--exit-when-done",
        "--linger",
        "1",
    )
    source = MqttSource(_options(broker), "steady", follow=False, backoff=FAST)
    watched = Watched()
    viewer = asyncio.create_task(watch(source, watched))
    await wait_for(lambda: len(watched.fold.jobs) == 10)
    # On this thread: the broker is tied to the thread that starts it (it stops if that thread ends).
    broker.restart()
    await asyncio.wait_for(viewer, 90)
    assert await wait_process(process) == 0
    live = sims.summary("steady")
    changes = watched.connection_changes
    assert any(not change.connected and "broker unreachable" in change.reason for change in changes)
    assert changes[-1].connected
    after_restart = watched.items[watched.items.index(changes[-1]) + 1]
    assert isinstance(after_restart, Snapshot)
    assert watched.fold.final_states() == live["final_states"]
    assert live["mqtt"]["connects"] >= 2


async def test_password_listener_passes_credentials_through(broker: Broker, sims: Sims) -> None:
    url = f"mqtt://{MQTT_USER}:{MQTT_PASSWORD}@127.0.0.1:{broker.auth_port}"
    process = sims.start("guarded", url, "--jobs", "3", "--exit-when-done", "--linger", "1")
    wrong = MqttSource(
        MqttOptions.from_url(broker.auth_url, username=MQTT_USER, password="wrong"), "guarded", backoff=FAST
    )
    stream = stream_of(wrong)
    refused = await asyncio.wait_for(anext(stream), 10)
    await stream.aclose()
    assert isinstance(refused, ConnectionChanged)
    assert not refused.connected
    assert "authori" in refused.reason.lower()
    right = MqttSource(
        MqttOptions.from_url(broker.auth_url, username=MQTT_USER, password=MQTT_PASSWORD), "guarded", follow=False
    )
    watched = await asyncio.wait_for(watch(right, Watched()), 60)
    assert await wait_process(process) == 0
    assert watched.fold.final_states() == sims.summary("guarded")["final_states"]


async def test_bad_messages_are_rejected_and_counted_on_both_sides(broker: Broker, sims: Sims) -> None:
    topics = Topics("ganga-monitor", "target")
    bad_commands = [
        b"\x00garbage",
        b'{"v": 2, "type": "PauseBack',  # cut short
        b'{"v": 7, "type": "PauseBackend", "data": {"backend": "local", "command_id": "v7"}}',
        b'{"v": 2, "type": "FormatDisk", "data": {"command_id": "unknown"}}',
        b'{"v": 2, "type": "SetInterval", "data": {"backend": "local", "seconds": [1], "command_id": "typed"}}',
        b'{"v": 2, "type": "RefreshJob", "data": {"job_id": "' + b"9" * 70_000 + b'", "command_id": "huge"}}',
    ]
    bad_events = [
        b"{{{",
        b'{"v": 3, "type": "JobChanged", "data": {}}',
        b'{"v": 2, "type": "JobAdded", "data": {"at": 1.0, "job": {"job_id": 5}}}',
        b"x" * 300_000,
    ]
    acks: list[CommandAcked] = []
    async with aiomqtt.Client("127.0.0.1", broker.port) as attacker:
        await attacker.subscribe(topics.ack)
        # Left retained before the session starts: it must not run when the session subscribes.
        stale = encode_command(PauseBackend(backend="local", command_id="retained"))
        await attacker.publish(topics.command, stale, qos=1, retain=True)
        process = sims.start(
            "target", broker.url, "--jobs", "6", "--local-mean-duration", "2", "--exit-when-done", "--linger", "1.5"
        )
        viewer_source = MqttSource(_options(broker), "target", follow=False, backoff=FAST)
        watched = Watched()
        viewer = asyncio.create_task(watch(viewer_source, watched))
        await wait_for(lambda: len(watched.fold.jobs) == 6)
        await attacker.publish(topics.command, b"", qos=1, retain=True)  # clears the retained command
        for payload in bad_commands:
            await attacker.publish(topics.command, payload, qos=1)
        for payload in bad_events:
            await attacker.publish(topics.events, payload, qos=1)
        async with asyncio.timeout(20):
            async for message in attacker.messages:
                assert isinstance(message.payload, bytes)
                event = decode_event(message.payload)
                assert isinstance(event, CommandAcked)
                acks.append(event)
                if len(acks) == len(bad_commands) + 1:
                    break
    assert not any(ack.ok for ack in acks)
    assert [ack.command_id for ack in acks] == ["retained", "", "", "v7", "unknown", "typed", "huge"]
    await asyncio.wait_for(viewer, 60)
    assert await wait_process(process) == 0
    live = sims.summary("target")
    assert live["mqtt"]["rejected"] == {
        "retained": 1,
        "malformed": 2,
        "version": 1,
        "unknown_type": 1,
        "invalid": 1,
        "oversized": 1,
    }
    assert dict(viewer_source.rejected) == {"malformed": 2, "version": 1, "invalid": 1}
    assert watched.fold.final_states() == live["final_states"]
    assert sims.stderr("target").count("rejected a command message") == 7
    assert "Traceback" not in sims.stderr("target")


async def test_one_viewer_watches_every_session(broker: Broker, sims: Sims) -> None:
    for name in ("left", "right"):
        sims.start(name, broker.url, "--jobs", "3", "--local-mean-duration", "30")
    source = MqttSource(_options(broker), "all", backoff=FAST)
    wanted = {f"{name}/{number}" for name in ("left", "right") for number in (1, 2, 3)}
    stream = stream_of(source)
    jobs: set[str] = set()
    async with asyncio.timeout(30):
        async for item in stream:
            if isinstance(item, Snapshot):
                jobs = {job.job_id for job in item.jobs}
            elif isinstance(item, JobAdded):
                jobs.add(item.job.job_id)
            if wanted <= jobs:
                break
    # Acknowledgements arrive with the events, so something must go on reading them.
    reader = asyncio.create_task(watch(_Resumed(stream), Watched(), until_ended=False))
    ack = await source.send(PauseBackend(backend="right/local"))
    assert ack.ok
    assert ack.message == "local paused"
    unrouted = await source.send(PauseBackend(backend="local"))
    assert not unrouted.ok
    assert "session" in unrouted.message
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    await stream.aclose()
    # Sessions of earlier tests are still retained by the broker, each under its own name.
    assert all(job.partition("/")[0] not in ("", "_viewer") for job in jobs)


@pytest.mark.parametrize(("ci", "outcome"), [("1", "failed"), ("", "skipped")])
def test_the_broker_fixture_fails_in_ci_when_mosquitto_cannot_start(ci: str, outcome: str) -> None:
    # Runs one broker test in a child pytest whose mosquitto is a program that exits at once.
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "CI": ci,
        "GANGA_MONITOR_MOSQUITTO": "/bin/false",
        "PYTHONPATH": str(root),
        "PYTEST_ADDOPTS": "",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            f"{Path(__file__)}::test_password_listener_passes_credentials_through",
        ],
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
        timeout=120,
        check=False,
    )
    tail = result.stdout[-600:]
    if outcome == "failed":
        assert result.returncode != 0, tail
        assert "mosquitto did not start" in result.stdout, tail
        assert "1 error" in tail or "1 failed" in tail, tail
    else:
        assert result.returncode == 0, tail
        assert "1 skipped" in tail, tail


async def test_job_changes_and_records_reach_a_qos1_subscriber_at_qos1(broker: Broker, sims: Sims) -> None:
    topics = Topics("ganga-monitor", "qos")
    seen: dict[str, set[int]] = {"JobChanged": set(), "JobAdded": set(), "OpQueued": set()}
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="qos-probe") as client:
        await client.subscribe(f"{topics.root}/#", qos=1)
        process = sims.start("qos", broker.url, "--jobs", "6", "--exit-when-done", "--linger", "1")
        async with asyncio.timeout(60):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                event = decode_event(message.payload)
                kind = type(event).__name__
                if kind in seen:
                    seen[kind].add(message.qos)
                if isinstance(event, SessionEnded):
                    break
        assert await wait_process(process) == 0
    # The broker delivers at the lower of the publisher's and the subscriber's QoS, so a
    # QoS 1 here proves the session published job changes and job records at QoS 1.
    assert seen["JobChanged"] == {1}
    assert seen["JobAdded"] == {1}
    assert seen["OpQueued"] <= {0}  # progress is superseded by the next; it stays at QoS 0
