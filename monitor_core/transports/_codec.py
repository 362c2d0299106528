"""The wire schema: bus events and viewer commands as versioned, validated JSON.

A message is ``{"v": 2, "type": "<class name>", "data": {...fields...}}``: an event
flows from a session to its viewers, a command from a viewer back to the session.
Decoding checks the version, the type, the size and every field's type (strictly: a
string is not a number), and raises :class:`WireError` with the reason; it never
unpickles or evaluates anything.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import re
import typing
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Final

import pydantic

from .._commands import (
    CollectOutput,
    Command,
    PauseBackend,
    RefreshJob,
    ResumeBackend,
    SelectEvents,
    SetInterval,
    TailOutput,
)
from .._events import (
    BreakerChanged,
    CommandAcked,
    Event,
    Heartbeat,
    JobAdded,
    JobChanged,
    JobRecord,
    LagSampled,
    LocalFault,
    OpFinished,
    OpQueued,
    OpStarted,
    Rescheduled,
    SessionEnded,
    Snapshot,
    UpdateRejected,
)

__all__ = [
    "COMMAND_TYPES",
    "EVENT_TYPES",
    "EncodedEvents",
    "MAX_COMMAND_BYTES",
    "MAX_MESSAGE_BYTES",
    "SCHEMA_VERSION",
    "WireError",
    "command_id_of",
    "decode_command",
    "decode_event",
    "encode_command",
    "encode_event",
    "encode_snapshot",
    "event_kinds",
    "event_to_data",
    "iter_snapshot_pieces",
    "warm_up",
]

SCHEMA_VERSION: Final = 2
MAX_MESSAGE_BYTES: Final = 256 * 1024 * 1024
"""Largest message accepted; a snapshot of 100,000 jobs takes about 30 MB."""
MAX_COMMAND_BYTES: Final = 64 * 1024
"""Largest command a session accepts from a viewer; real ones take about 100 bytes."""

EVENT_TYPES: Final[dict[str, type[Any]]] = {
    cls.__name__: cls
    for cls in (
        Snapshot,
        JobAdded,
        JobChanged,
        OpQueued,
        OpStarted,
        OpFinished,
        UpdateRejected,
        LagSampled,
        BreakerChanged,
        Heartbeat,
        Rescheduled,
        LocalFault,
        CommandAcked,
        SessionEnded,
    )
}

COMMAND_TYPES: Final[dict[str, type[Any]]] = {
    cls.__name__: cls
    for cls in (RefreshJob, PauseBackend, ResumeBackend, SetInterval, TailOutput, CollectOutput, SelectEvents)
}


def warm_up() -> None:
    """Build every event's and command's reader and writer, and a snapshot's, now.

    Built on first use, each takes 5-80 ms (pydantic makes its schema): on a session's loop, the
    first viewer's snapshot or command waited that long, and everything else with it.
    """
    for cls in (*EVENT_TYPES.values(), *COMMAND_TYPES.values()):
        _adapter(cls)
    _snapshot_fields()


def event_kinds(names: tuple[str, ...]) -> tuple[type[Any], ...]:
    """The event types these wire names stand for.

    Raises:
        WireError: a name is no event type (the message lists the known ones).
    """
    unknown = sorted(set(names) - EVENT_TYPES.keys())
    if unknown or not names:
        raise WireError(
            f"no event type named {', '.join(unknown) or '(none given)'}; known: {', '.join(sorted(EVENT_TYPES))}",
            kind="invalid",
        )
    return tuple(EVENT_TYPES[name] for name in dict.fromkeys(names))


class WireError(ValueError):
    """A message that does not follow the wire schema; the text says why.

    Args:
        reason: what is wrong, for logs and acknowledgements.
        kind: a short category for rejection counters (``malformed``, ``oversized``,
            ``version``, ``unknown_type``, ``invalid``).
    """

    def __init__(self, reason: str, kind: str = "invalid") -> None:
        super().__init__(reason)
        self.kind = kind


_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}
"""Field names per dataclass, read once: ``dataclasses.fields`` per value was the encoder's main cost."""


def _field_names(cls: type[Any]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _plain(value: Any) -> Any:
    cls = type(value)
    if value is None or cls is str or cls is float or cls is int or cls is bool:
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: _plain(getattr(value, name)) for name in _field_names(cls)}
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return value


def event_to_data(event: Event) -> dict[str, Any]:
    """The wire form of an event, as JSON-able data."""
    return {"v": SCHEMA_VERSION, "type": type(event).__name__, "data": _plain(event)}


_HEADS: dict[type[Any], bytes] = {}
"""Each event type's message head, ``{"v":2,"type":"<name>","data":``, made once."""


def _head(cls: type[Any]) -> bytes:
    head = _HEADS.get(cls)
    if head is None:
        head = _HEADS[cls] = f'{{"v":{SCHEMA_VERSION},"type":"{cls.__name__}","data":'.encode()
    return head


def encode_event(event: Event) -> bytes:
    """One event as a compact JSON document (no trailing newline): ``event_to_data`` written out.

    The body is written by pydantic-core from the event's type, the same schema that reads it
    back: 2.2 us an event, where the standard library's encoder, calling back into Python for
    each dataclass and enum, took 6.8 us. A session sends every event to every viewer, and in
    a completion burst that encoding was a quarter of its loop's time.
    """
    cls = type(event)
    return _head(cls) + _adapter(cls).dump_json(event) + b"}"


_SNAPSHOT_SLICE: Final = 250
"""Job records encoded at once (about 75 kB of JSON, 0.3 ms; 2,000 took 2.4 ms, 5-7 on two busy cores)."""
_PIECE_BYTES: Final = 64 * 1024
"""Small pieces of a snapshot are joined up to this size, so each write carries a useful amount
(and a piece, about 250 jobs, takes its writer 0.3 ms)."""


def encode_snapshot(snapshot: Snapshot, *, slice_size: int = _SNAPSHOT_SLICE) -> list[bytes]:
    """A snapshot as :func:`encode_event` writes it, in pieces whose concatenation is the message."""
    return list(iter_snapshot_pieces(snapshot, slice_size=slice_size))


def iter_snapshot_pieces(snapshot: Snapshot, *, slice_size: int = _SNAPSHOT_SLICE) -> Iterator[bytes]:
    """The pieces of :func:`encode_snapshot`, each encoded only when asked for.

    The jobs are encoded a slice at a time, so no single string of the whole message (tens of
    MB at 100,000 jobs) is built, then copied to bytes, then copied again into a transport's
    buffer. Taken lazily, only the piece being written is held: a session sending a snapshot
    to a viewer that reads slowly does not keep the whole message for as long as that takes.
    """
    small: list[bytes] = []
    size = 0
    for piece in _snapshot_parts(snapshot, max(1, slice_size)):
        small.append(piece)
        size += len(piece)
        if size >= _PIECE_BYTES:
            yield b"".join(small)
            small, size = [], 0
    if small:
        yield b"".join(small)


def _snapshot_parts(snapshot: Snapshot, slice_size: int) -> Iterator[bytes]:
    yield _head(Snapshot) + b"{"
    for index, (name, adapter) in enumerate(_snapshot_fields().items()):
        yield (b"," if index else b"") + b'"' + name.encode() + b'":'
        if name == "jobs":
            yield from _list_parts(adapter, snapshot.jobs, lambda _: 1, slice_size)
        elif name == "ops":
            # An operation weighs the jobs it names: 200 polls of 500 jobs written at once took 66 ms.
            yield from _list_parts(adapter, snapshot.ops, lambda op: len(op.job_ids) or 1, slice_size)
        else:
            yield adapter.dump_json(getattr(snapshot, name))
    yield b"}}"


def _list_parts(
    adapter: pydantic.TypeAdapter[Any], items: tuple[Any, ...], weight: Callable[[Any], int], slice_size: int
) -> Iterator[bytes]:
    """A list written a slice at a time, each slice weighing about ``slice_size`` (one item at least)."""
    yield b"["
    start, weighed = 0, 0
    for end, item in enumerate(items, 1):
        weighed += weight(item)
        if weighed >= slice_size or end == len(items):
            # A list's encoding without its brackets is its items, comma-separated.
            part = adapter.dump_json(items[start:end])[1:-1]
            yield b"," + part if start else part
            start, weighed = end, 0
    yield b"]"


@functools.cache
def _snapshot_fields() -> dict[str, pydantic.TypeAdapter[Any]]:
    """A writer for each of a snapshot's fields, by name in their order, written as the whole event would be."""
    hints = typing.get_type_hints(Snapshot)
    return {name: pydantic.TypeAdapter(hints[name], config=_CONFIG) for name in _field_names(Snapshot)}


class EncodedEvents:
    """Each event's encoded bytes, made once and shared by every reader of the same event object.

    The bus hands the same event object to every subscription, so a session serving several
    viewers encodes an event once instead of once per viewer. Entries are keyed by the
    object's identity and keep the object alive, so an id is never reused while cached; the
    oldest go first past ``size``.

    Args:
        size: events kept; a viewer further behind than this re-encodes what it reads.
    """

    def __init__(self, size: int = 8192) -> None:
        self._size = size
        # Ordered for a cheap eviction of the oldest (``next(iter(dict))`` skips every deleted slot).
        self._cache: OrderedDict[int, tuple[Event, bytes]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._cache)

    def encode(self, event: Event) -> bytes:
        """The event as :func:`encode_event` writes it, from the cache when another reader asked first."""
        key = id(event)
        entry = self._cache.get(key)
        if entry is not None and entry[0] is event:
            self.hits += 1
            return entry[1]
        self.misses += 1
        message = encode_event(event)
        cache = self._cache
        cache[key] = (event, message)
        if len(cache) > self._size:
            cache.popitem(last=False)
        return message


def encode_command(command: Command) -> bytes:
    """One viewer command as a compact JSON document."""
    document = {"v": SCHEMA_VERSION, "type": type(command).__name__, "data": _plain(command)}
    return json.dumps(document, separators=(",", ":")).encode()


_ADAPTERS: dict[str, pydantic.TypeAdapter[Any]] = {}
_CONFIG: Final = pydantic.ConfigDict(extra="forbid", ser_json_inf_nan="constants")
"""Unknown fields refused on reading; an infinite float written as ``Infinity``, as ``json`` writes it, not as null."""
_ENVELOPE: Final = re.compile(rb'\{"v":(\d+),"type":"(\w+)","data":')
"""How this codec writes a message's head: one read of it finds the body without parsing the message twice."""


def _adapter(cls: type[Any]) -> pydantic.TypeAdapter[Any]:
    adapter = _ADAPTERS.get(cls.__name__)
    if adapter is None:
        # A field the type does not have is refused by validation itself, which the direct
        # path of ``_decode`` relies on (nested records keep ignoring extras, as they always did).
        cls.__pydantic_config__ = _CONFIG
        adapter = _ADAPTERS[cls.__name__] = pydantic.TypeAdapter(cls)
    return adapter


def _decode(message: bytes | str | dict[str, Any], types: dict[str, type[Any]], limit: int, what: str) -> Any:
    if isinstance(message, (bytes, str)) and len(message) > limit:
        raise WireError(f"message of {len(message)} bytes exceeds {limit}", "oversized")
    if isinstance(message, bytes):
        decoded = _decode_direct(message, types)
        if decoded is not None:
            return decoded
    if isinstance(message, (bytes, str)):
        try:
            message = json.loads(message)
        except (ValueError, UnicodeDecodeError) as exc:
            raise WireError(f"not JSON: {exc}", "malformed") from None
    if not isinstance(message, dict):
        raise WireError("a message must be a JSON object", "malformed")
    version = message.get("v")
    if version != SCHEMA_VERSION:
        raise WireError(f"unsupported schema version {version!r} (this side speaks {SCHEMA_VERSION})", "version")
    kind = message.get("type")
    cls = types.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise WireError(f"unknown {what} type {kind!r}", "unknown_type")
    data = message.get("data")
    if not isinstance(data, dict):
        raise WireError(f"{kind}: 'data' must be an object")
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise WireError(f"{kind}: unknown field(s) {', '.join(sorted(unknown))}")
    try:
        return _adapter(cls).validate_json(json.dumps(data), strict=True)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(message)"
        raise WireError(f"{kind}: field {where}: {first['msg']}") from None


def _decode_direct(message: bytes, types: dict[str, type[Any]]) -> Any:
    """A well-formed message written as this codec writes it, validated straight from its bytes.

    Parsing into dicts, writing the body out again and validating that took twice the time,
    and for a 100,000-job snapshot a tree of dicts the size of the message several times over,
    held at once. ``None`` when the message is not in that form or does not validate: the
    general path then decodes it, or says precisely what is wrong with it.
    """
    head = _ENVELOPE.match(message)
    if head is None or not message.endswith(b"}") or int(head[1]) != SCHEMA_VERSION:
        return None
    cls = types.get(head[2].decode())
    if cls is None:
        return None
    if cls is Snapshot:
        snapshot = _decode_snapshot(message, head.end(), len(message) - 1)
        if snapshot is not None:
            return snapshot
    try:
        return _adapter(cls).validate_json(message[head.end() : -1], strict=True)
    except pydantic.ValidationError:
        return None


_JOBS_START: Final = b',"jobs":['
_JOBS_END: Final = b'],"ops":'
_JOB_SEPARATOR: Final = b'},{"job_id":'
"""Between two jobs of a snapshot as this codec writes it. A quote inside a JSON string is
always escaped, so these bytes cannot be part of a job's text: they are found only between jobs,
and finding them in a message written otherwise is caught by validation."""
_JOBS_READ_AT_ONCE: Final = 2000


def _decode_snapshot(message: bytes, body: int, stop: int) -> Snapshot | None:
    """A snapshot's body (``message[body:stop]``) as this codec writes it, its jobs validated a slice at a time.

    Validated whole, a 100,000-job snapshot (30 MB) took 170 MiB more than its records while it
    was read, since the whole document is parsed before it is validated; a viewer's memory peaked
    there. Read in place, not from a copy of the body. ``None`` when the body is laid out
    otherwise or does not validate.
    """
    start = message.find(_JOBS_START, body, stop)
    if start < 0:
        return None
    first = start + len(_JOBS_START)
    end = message.find(_JOBS_END, first, stop)
    if end < 0:
        return None
    jobs_adapter = _snapshot_fields()["jobs"]
    jobs: list[JobRecord] = []
    try:
        rest: Snapshot = _adapter(Snapshot).validate_json(message[body:start] + message[end + 1 : stop], strict=True)
        begin, seen = first, 0
        at = message.find(_JOB_SEPARATOR, first, end)
        while at >= 0:
            seen += 1
            if seen % _JOBS_READ_AT_ONCE == 0:
                jobs.extend(jobs_adapter.validate_json(b"[" + message[begin : at + 1] + b"]", strict=True))
                begin = at + 2
            at = message.find(_JOB_SEPARATOR, at + 1, end)
        if begin < end:
            jobs.extend(jobs_adapter.validate_json(b"[" + message[begin:end] + b"]", strict=True))
    except pydantic.ValidationError:
        return None
    return dataclasses.replace(rest, jobs=tuple(jobs))


def decode_event(message: bytes | str | dict[str, Any]) -> Event:
    """Parse and validate one wire message carrying an event.

    Raises:
        WireError: malformed JSON, oversized, unknown version or type, or wrong fields.
    """
    event: Event = _decode(message, EVENT_TYPES, MAX_MESSAGE_BYTES, "message")
    return event


def decode_command(message: bytes | str | dict[str, Any]) -> Command:
    """Parse and validate one wire message carrying a viewer's command.

    Raises:
        WireError: malformed JSON, larger than :data:`MAX_COMMAND_BYTES`, unknown version
            or command, or wrong fields.
    """
    command: Command = _decode(message, COMMAND_TYPES, MAX_COMMAND_BYTES, "command")
    if not command.command_id or len(command.command_id) > 64:
        raise WireError(f"{type(command).__name__}: field command_id: must be 1 to 64 characters")
    return command


def command_id_of(message: bytes | str) -> str:
    """The ``command_id`` of a rejected command if it can be read, so the ack finds its sender."""
    try:
        data = json.loads(message)["data"]["command_id"]
    except (ValueError, UnicodeDecodeError, TypeError, KeyError):
        return ""
    return data if isinstance(data, str) and len(data) <= 64 else ""
