"""The wire schema's viewer commands: round trips and strict validation."""

from __future__ import annotations

import json

import pytest

from monitor_core import (
    CollectOutput,
    Heartbeat,
    PauseBackend,
    RefreshJob,
    ResumeBackend,
    SelectEvents,
    SetInterval,
    TailOutput,
)
from monitor_core.transports import (
    COMMAND_TYPES,
    MAX_COMMAND_BYTES,
    Backoff,
    WireError,
    decode_command,
    decode_event,
    encode_command,
    event_kinds,
)

COMMANDS = [
    RefreshJob(job_id="42"),
    PauseBackend(backend="dirac-sim"),
    ResumeBackend(backend="local"),
    SetInterval(backend="local", seconds=2.5),
    TailOutput(job_id="7"),
    CollectOutput(job_id="7"),
    SelectEvents(kinds=("Heartbeat", "LagSampled")),
]


def test_event_kinds_are_named_as_on_the_wire_and_a_wrong_name_is_refused_with_the_known_ones() -> None:
    assert event_kinds(("Heartbeat", "Heartbeat")) == (Heartbeat,)
    for names in (("Heartbeat", "Hartbeat"), ()):
        with pytest.raises(WireError) as refused:
            event_kinds(names)
        assert "known: " in str(refused.value)
        assert "LagSampled" in str(refused.value)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: type(command).__name__)
def test_every_command_round_trips(command: object) -> None:
    assert decode_command(encode_command(command)) == command  # type: ignore[arg-type]


def test_every_command_type_is_in_the_schema() -> None:
    assert set(COMMAND_TYPES) == {type(command).__name__ for command in COMMANDS}


@pytest.mark.parametrize(
    ("message", "kind", "words"),
    [
        (b"\xff\xfe", "malformed", "not JSON"),
        (b'"just a string"', "malformed", "JSON object"),
        (b'{"v": 1, "type": "RefreshJob", "data": {"job_id": "1", "command_id": "a"}}', "version", "version 1"),
        (b'{"type": "RefreshJob", "data": {"job_id": "1", "command_id": "a"}}', "version", "None"),
        (b'{"v": 2, "type": "Shutdown", "data": {"command_id": "a"}}', "unknown_type", "'Shutdown'"),
        (b'{"v": 2, "type": "Snapshot", "data": {"at": 1.0, "session": "s"}}', "unknown_type", "Snapshot"),
        (b'{"v": 2, "type": "RefreshJob", "data": {"job_id": 42, "command_id": "a"}}', "invalid", "job_id"),
        (
            b'{"v": 2, "type": "SetInterval", "data": {"backend": "x", "seconds": "2", "command_id": "a"}}',
            "invalid",
            "seconds",
        ),
        (b'{"v": 2, "type": "RefreshJob", "data": {"command_id": "a"}}', "invalid", "job_id"),
        (b'{"v": 2, "type": "RefreshJob", "data": {"job_id": "1", "command_id": "a", "x": 1}}', "invalid", "x"),
        (b'{"v": 2, "type": "RefreshJob", "data": {"job_id": "1", "command_id": ""}}', "invalid", "command_id"),
        (b'{"v": 2, "type": "RefreshJob", "data": []}', "invalid", "data"),
    ],
)
def test_bad_commands_are_rejected_with_a_reason(message: bytes, kind: str, words: str) -> None:
    with pytest.raises(WireError) as caught:
        decode_command(message)
    assert caught.value.kind == kind
    assert words in str(caught.value)


def test_oversized_commands_are_rejected_before_parsing() -> None:
    huge = json.dumps({"v": 2, "type": "RefreshJob", "data": {"job_id": "1" * MAX_COMMAND_BYTES, "command_id": "a"}})
    with pytest.raises(WireError) as caught:
        decode_command(huge.encode())
    assert caught.value.kind == "oversized"


def test_a_command_is_not_an_event_and_an_event_is_not_a_command() -> None:
    with pytest.raises(WireError, match="unknown message type 'RefreshJob'"):
        decode_event(encode_command(RefreshJob(job_id="1")))


def test_backoff_grows_to_its_cap_with_jitter_and_resets() -> None:
    import random

    backoff = Backoff(base=0.1, cap=1.0, rng=random.Random(3))
    delays = [backoff.next_delay() for _ in range(12)]
    assert all(0.05 <= delay <= 1.0 for delay in delays)
    assert max(delays[6:]) > 0.5
    assert len(set(delays)) == len(delays)
    backoff.reset()
    assert backoff.next_delay() <= 0.1
    with pytest.raises(ValueError, match="base"):
        Backoff(base=0.0)
