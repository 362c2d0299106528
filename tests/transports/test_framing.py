"""Frames on a byte stream: whole messages, chunked ones, and streams that end or lie about sizes."""

from __future__ import annotations

import asyncio
import struct

import pytest

from monitor_core.transports import FrameError, encode_frame, read_frame
from monitor_core.transports._framing import CHUNKED


def _stream(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def _chunked(*pieces: bytes) -> bytes:
    return struct.pack(">I", CHUNKED) + b"".join(encode_frame(piece) for piece in pieces) + struct.pack(">I", 0)


async def test_a_chunked_message_reads_as_its_pieces_joined_between_plain_frames() -> None:
    reader = _stream(encode_frame(b"first") + _chunked(b'{"a":', b"1", b"}") + encode_frame(b"last"))
    assert await read_frame(reader, 1024) == b"first"
    assert await read_frame(reader, 1024) == b'{"a":1}'
    assert await read_frame(reader, 1024) == b"last"
    assert await read_frame(reader, 1024) is None


async def test_a_chunked_message_is_held_to_the_limit_on_its_total() -> None:
    reader = _stream(_chunked(b"x" * 600, b"y" * 600))
    with pytest.raises(FrameError, match="exceeds the limit of 1000") as caught:
        await read_frame(reader, 1000)
    assert caught.value.kind == "oversized"


async def test_a_stream_that_ends_inside_a_chunked_message_is_truncated() -> None:
    reader = _stream(struct.pack(">I", CHUNKED) + encode_frame(b"half"))
    with pytest.raises(FrameError, match="ended 4 bytes into a chunked message") as caught:
        await read_frame(reader, 1024)
    assert caught.value.kind == "truncated"
