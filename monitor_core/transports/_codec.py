"""The wire schema: bus events as versioned, validated JSON.

A message is ``{"v": 1, "type": "<event class>", "data": {...fields...}}``. Decoding
checks the version, the type, the size and every field's type (strictly: a string is
not a number), and raises :class:`WireError` with the reason; it never unpickles or
evaluates anything.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any, Final

import pydantic

from .._events import (
    BreakerChanged,
    CommandAcked,
    Event,
    Heartbeat,
    JobAdded,
    JobChanged,
    LagSampled,
    OpFinished,
    OpQueued,
    OpStarted,
    SessionEnded,
    Snapshot,
    UpdateRejected,
)

__all__ = [
    "EVENT_TYPES",
    "MAX_MESSAGE_BYTES",
    "SCHEMA_VERSION",
    "WireError",
    "decode_event",
    "encode_event",
    "event_to_data",
]

SCHEMA_VERSION: Final = 1
MAX_MESSAGE_BYTES: Final = 256 * 1024 * 1024
"""Largest message accepted; a snapshot of 100,000 jobs takes about 30 MB."""

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
        CommandAcked,
        SessionEnded,
    )
}


class WireError(ValueError):
    """A message that does not follow the wire schema; the text says why."""


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return value


def event_to_data(event: Event) -> dict[str, Any]:
    """The wire form of an event, as JSON-able data."""
    return {"v": SCHEMA_VERSION, "type": type(event).__name__, "data": _plain(event)}


def encode_event(event: Event) -> bytes:
    """One event as a compact JSON document (no trailing newline)."""
    return json.dumps(event_to_data(event), separators=(",", ":")).encode()


_ADAPTERS: dict[str, pydantic.TypeAdapter[Any]] = {}


def _adapter(cls: type[Any]) -> pydantic.TypeAdapter[Any]:
    adapter = _ADAPTERS.get(cls.__name__)
    if adapter is None:
        adapter = _ADAPTERS[cls.__name__] = pydantic.TypeAdapter(cls)
    return adapter


def decode_event(message: bytes | str | dict[str, Any]) -> Event:
    """Parse and validate one wire message.

    Raises:
        WireError: malformed JSON, oversized, unknown version or type, or wrong fields.
    """
    if isinstance(message, (bytes, str)):
        if len(message) > MAX_MESSAGE_BYTES:
            raise WireError(f"message of {len(message)} bytes exceeds {MAX_MESSAGE_BYTES}")
        try:
            message = json.loads(message)
        except (ValueError, UnicodeDecodeError) as exc:
            raise WireError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise WireError("a message must be a JSON object")
    version = message.get("v")
    if version != SCHEMA_VERSION:
        raise WireError(f"unsupported schema version {version!r} (this side speaks {SCHEMA_VERSION})")
    kind = message.get("type")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise WireError(f"unknown message type {kind!r}")
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
