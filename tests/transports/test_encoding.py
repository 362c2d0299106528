"""Encoding events: the fast writer says exactly what the wire form says, and once per event."""

from __future__ import annotations

import json
import math

import pytest

from monitor_core._events import (
    BackendRecord,
    CommandAcked,
    Event,
    JobAdded,
    JobChanged,
    JobRecord,
    LagSampled,
    OpQueued,
    OpRecord,
    Rescheduled,
    Snapshot,
)
from monitor_core._model import JobStatus, OpKind, OpState
from monitor_core.transports import WireError, _codec, decode_event, encode_event, event_to_data
from monitor_core.transports._codec import EncodedEvents, encode_snapshot

JOB = JobRecord(job_id="7", backend="dirac-sim", status=JobStatus.RUNNING, name="j", group="g", backend_id="42")
OP = OpRecord(op_id=3, kind=OpKind.POLL, backend="dirac-sim", job_ids=("7", "8"), state=OpState.QUEUED, enqueued_at=1.5)
EVENTS: list[Event] = [
    JobAdded(at=1.0, job=JOB),
    JobChanged(
        at=2.0, job_id="7", backend="dirac-sim", old=JobStatus.RUNNING, new=JobStatus.FAILED, source="poll", exit_code=3
    ),
    OpQueued(at=3.0, op=OP),
    LagSampled(at=4.0, backend=BackendRecord(name="local", lag=0.25, max_calls_per_minute=None)),
    Rescheduled(at=5.0, backend="local", next_poll_at=9.5, job_ids=("1", "2")),
    CommandAcked(at=6.0, command_id="c1", ok=False, message='caf\u00e9 "quoted"'),
    Snapshot(at=7.0, session="s", jobs=(JOB,), ops=(OP,), backends=(BackendRecord(name="x"),), counters={"a": 1}),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda event: type(event).__name__)
def test_encoding_writes_the_wire_form_and_decodes_back(event: Event) -> None:
    message = encode_event(event)
    assert message.startswith(f'{{"v":2,"type":"{type(event).__name__}","data":{{'.encode())
    assert json.loads(message) == event_to_data(event)
    assert decode_event(message) == event


def test_an_infinite_figure_goes_over_the_wire_as_infinity_not_as_null() -> None:
    event = LagSampled(at=4.0, backend=BackendRecord(name="local", lag=math.inf))
    message = encode_event(event)
    assert b'"lag":Infinity' in message
    assert decode_event(message) == event


def test_an_event_is_encoded_once_for_every_reader() -> None:
    encoded = EncodedEvents(size=2)
    first, second, third = EVENTS[:3]
    assert encoded.encode(first) is encoded.encode(first)
    assert (encoded.hits, encoded.misses) == (1, 1)
    # An equal event that is another object is encoded on its own (identity, not equality).
    twin = JobAdded(at=1.0, job=JOB)
    assert encoded.encode(twin) == encoded.encode(first)
    encoded.encode(second)
    encoded.encode(third)
    assert len(encoded) == 2
    assert encoded.encode(first) == encode_event(first)


@pytest.mark.parametrize("jobs", [0, 1, 2, 3, 7])
def test_a_snapshot_in_pieces_is_the_same_message(jobs: int) -> None:
    snapshot = Snapshot(
        at=7.0,
        session="s",
        jobs=tuple(JobRecord(job_id=str(i), backend="local", status=JobStatus.RUNNING) for i in range(jobs)),
        ops=(OP,),
        counters={"a": 1},
    )
    for slice_size in (1, 2, 3, 2000):
        pieces = encode_snapshot(snapshot, slice_size=slice_size)
        assert b"".join(pieces) == encode_event(snapshot)
    assert decode_event(b"".join(pieces)) == snapshot


@pytest.mark.parametrize("event", EVENTS, ids=lambda event: type(event).__name__)
def test_a_message_as_written_is_validated_from_its_bytes_without_parsing_it_twice(
    event: Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = encode_event(event)
    # The general path parses into dicts first; the message as this side writes it never needs to.
    monkeypatch.setattr(_codec.json, "loads", _refuse)
    assert decode_event(message) == event


@pytest.mark.parametrize(
    ("message", "kind", "words"),
    [
        (encode_event(EVENTS[1])[:-2] + b',"sneaky":1}}', "invalid", "unknown field(s) sneaky"),
        (b'{"v":2,"type":"LagSampled","data":{"at":"soon","backend":{"name":"x"}}}', "invalid", "field at"),
        (b'{"v":2,"type":"Heartbeat","data":{"at":1.0}', "malformed", "not JSON"),
        (b'{"v":3,"type":"Heartbeat","data":{"at":1.0}}', "version", "schema version 3"),
        (b'{"v":2,"type":"Exploit","data":{}}', "unknown_type", "'Exploit'"),
    ],
)
def test_a_message_in_the_written_form_that_is_wrong_is_rejected_as_precisely_as_any(
    message: bytes, kind: str, words: str
) -> None:
    with pytest.raises(WireError) as caught:
        decode_event(message)
    assert caught.value.kind == kind
    assert words in str(caught.value)


def _refuse(*_: object, **__: object) -> object:
    raise AssertionError("parsed into dicts")


def test_a_big_snapshot_is_read_a_slice_of_jobs_at_a_time_whatever_its_jobs_say(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Texts holding what lies between two jobs on the wire: escaped, they cannot be taken for it.
    tricky = '"},{"job_id":"x"'
    jobs = tuple(
        JobRecord(job_id=str(i), backend="dirac-sim", status=JobStatus.RUNNING, name=tricky, info=f"{tricky} {i}")
        for i in range(4500)
    )
    snapshot = Snapshot(at=7.0, session="s", jobs=jobs, ops=(OP,), counters={"a": 1})
    message = b"".join(encode_snapshot(snapshot))
    reads: list[int] = []
    jobs_adapter = _codec._snapshot_fields()["jobs"]
    original = jobs_adapter.validate_json

    def counted(data: bytes, **options: object) -> object:
        read = original(data, **options)  # type: ignore[arg-type]
        reads.append(len(read))
        return read

    monkeypatch.setattr(jobs_adapter, "validate_json", counted)
    monkeypatch.setattr(_codec.json, "loads", _refuse)
    assert decode_event(message) == snapshot
    assert reads == [2000, 2000, 500]


def test_a_snapshot_written_otherwise_is_still_read_and_a_bad_job_in_one_is_refused() -> None:
    snapshot = Snapshot(at=7.0, session="s", jobs=(JOB,), ops=(OP,), counters={"a": 1})
    spaced = json.dumps(json.loads(encode_event(snapshot)), indent=1).encode()
    assert decode_event(spaced) == snapshot
    bad = encode_event(snapshot).replace(b'"status":"running"', b'"status":"sleeping"')
    with pytest.raises(WireError) as caught:
        decode_event(bad)
    assert "jobs" in str(caught.value)


def test_a_snapshot_s_operations_are_written_a_slice_of_jobs_at_a_time_too() -> None:
    ops = tuple(
        OpRecord(
            op_id=n,
            kind=OpKind.POLL,
            backend="dirac-sim",
            job_ids=tuple(str(i) for i in range(n * 500, n * 500 + 500)),
            state=OpState.QUEUED,
            enqueued_at=1.5,
        )
        for n in range(200)
    )
    snapshot = Snapshot(at=7.0, session="s", jobs=(JOB,), ops=(*ops, OP), counters={"a": 1})
    pieces = encode_snapshot(snapshot)
    assert b"".join(pieces) == encode_event(snapshot)
    # Written whole, the operations were one piece of 1.3 MB (66 ms of the session's loop).
    assert max(len(piece) for piece in pieces) < 256 * 1024
    assert decode_event(b"".join(pieces)) == snapshot
