"""Length-prefixed frames over a byte stream: a 4-byte big-endian size, then the message.

A size above the reader's limit is refused before a byte of the body is read, so a
hostile or broken peer cannot make the reader buffer an arbitrary amount.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Final

__all__ = ["FrameError", "HEADER", "encode_frame", "read_frame"]

HEADER: Final = struct.Struct(">I")


class FrameError(Exception):
    """The stream cannot be read as frames any more; the connection must be dropped.

    Args:
        reason: what went wrong.
        kind: ``oversized`` or ``truncated``, for rejection counters.
    """

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.kind = kind


def encode_frame(message: bytes) -> bytes:
    """A message with its size in front."""
    return HEADER.pack(len(message)) + message


async def read_frame(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    """Read one frame's body.

    Args:
        reader: the stream.
        limit: the largest body accepted, in bytes.

    Returns:
        The body, or ``None`` at a clean end of stream (between frames).

    Raises:
        FrameError: the size is above ``limit``, or the stream ended inside a frame.
    """
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise FrameError(f"stream ended inside a frame header ({len(exc.partial)} of 4 bytes)", "truncated") from None
    (size,) = HEADER.unpack(header)
    if size > limit:
        raise FrameError(f"frame of {size} bytes exceeds the limit of {limit}", "oversized")
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise FrameError(f"stream ended {len(exc.partial)} bytes into a frame of {size}", "truncated") from None
