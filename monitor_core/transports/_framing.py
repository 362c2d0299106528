"""Length-prefixed frames over a byte stream: a 4-byte big-endian size, then the message.

A size above the reader's limit is refused before a byte of the body is read, so a
hostile or broken peer cannot make the reader buffer an arbitrary amount.

A message whose size is not known until all of it is made (a snapshot, encoded a slice at
a time) is sent in chunks: the size :data:`CHUNKED`, then frames of its pieces, then an
empty frame. Its writer never holds the whole message; the reader joins the pieces, held
to the same limit on their total.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Final

__all__ = ["CHUNKED", "FrameError", "HEADER", "encode_frame", "read_frame"]

HEADER: Final = struct.Struct(">I")
CHUNKED: Final = 0xFFFF_FFFF
"""The size that says a message follows in chunks, each framed, ending with an empty one."""


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
    if size == CHUNKED:
        return await _read_chunks(reader, limit)
    if size > limit:
        raise FrameError(f"frame of {size} bytes exceeds the limit of {limit}", "oversized")
    return await _body(reader, size)


async def _read_chunks(reader: asyncio.StreamReader, limit: int) -> bytes:
    """The pieces of a chunked message, up to its empty frame, joined."""
    pieces: list[bytes] = []
    total = 0
    while True:
        try:
            header = await reader.readexactly(HEADER.size)
        except asyncio.IncompleteReadError:
            raise FrameError(f"stream ended {total} bytes into a chunked message", "truncated") from None
        (size,) = HEADER.unpack(header)
        if size == 0:
            return b"".join(pieces)
        total += size
        if size == CHUNKED or total > limit:
            raise FrameError(f"chunked message of over {total} bytes exceeds the limit of {limit}", "oversized")
        pieces.append(await _body(reader, size))


async def _body(reader: asyncio.StreamReader, size: int) -> bytes:
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise FrameError(f"stream ended {len(exc.partial)} bytes into a frame of {size}", "truncated") from None
