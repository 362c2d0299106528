"""The bus across process and machine boundaries, in one versioned wire schema.

``unix_socket`` serves a session beside it (the embedded default), ``mqtt`` through a
broker across machines, ``recording`` to a file; each has its viewer-side
:class:`~monitor_core.EventSource`.
"""

from .._fold import StateFold
from ._backoff import Backoff
from ._codec import (
    COMMAND_TYPES,
    EVENT_TYPES,
    MAX_COMMAND_BYTES,
    MAX_MESSAGE_BYTES,
    SCHEMA_VERSION,
    WireError,
    decode_command,
    decode_event,
    encode_command,
    encode_event,
    event_kinds,
    event_to_data,
)
from ._framing import FrameError, encode_frame, read_frame

__all__ = [
    "Backoff",
    "COMMAND_TYPES",
    "EVENT_TYPES",
    "FrameError",
    "MAX_COMMAND_BYTES",
    "MAX_MESSAGE_BYTES",
    "SCHEMA_VERSION",
    "StateFold",
    "WireError",
    "decode_command",
    "decode_event",
    "encode_command",
    "encode_event",
    "encode_frame",
    "event_kinds",
    "event_to_data",
    "read_frame",
]
