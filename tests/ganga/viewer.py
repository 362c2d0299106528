"""A viewer process for the Ganga tests: attaches to a session's socket and records every event.

    python -m tests.ganga.viewer SOCKET OUT.jsonl [--sessions N] [--timeout SECONDS]

Each event is written as one wire-format JSON line as it arrives; connection changes as
``{"type": "ConnectionChanged", ...}``. It follows the socket across session restarts and
exits after the N-th ``SessionEnded`` (default 1), or at the timeout (exit status 3).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from monitor_core import SessionEnded
from monitor_core.transports import Backoff, encode_event
from monitor_core.transports.socket_source import SocketSource


async def record(socket: Path, out: Path, sessions: int) -> None:
    source = SocketSource(socket, read_only=True, follow=True, backoff=Backoff(base=0.05, cap=0.2))
    ended = 0
    with out.open("wb") as stream:
        async for event in source.events():
            if isinstance(event, SessionEnded):
                ended += 1
            if hasattr(event, "connected"):
                line = json.dumps({"type": "ConnectionChanged", "connected": event.connected, "reason": event.reason})
                stream.write(line.encode() + b"\n")
            else:
                stream.write(encode_event(event) + b"\n")
            stream.flush()
            if ended >= sessions:
                return


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("socket", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()
    try:
        asyncio.run(asyncio.wait_for(record(args.socket, args.out, args.sessions), args.timeout))
    except TimeoutError:
        print(f"viewer: no end of session within {args.timeout}s", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
