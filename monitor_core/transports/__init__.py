"""The bus across process and machine boundaries, in one versioned wire schema."""

from ._codec import EVENT_TYPES, MAX_MESSAGE_BYTES, SCHEMA_VERSION, WireError, decode_event, encode_event, event_to_data

__all__ = [
    "EVENT_TYPES",
    "MAX_MESSAGE_BYTES",
    "SCHEMA_VERSION",
    "WireError",
    "decode_event",
    "encode_event",
    "event_to_data",
]
