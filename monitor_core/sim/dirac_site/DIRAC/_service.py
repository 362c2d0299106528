"""The connection to the simulated DIRAC service: blocking, one connection per call, no timeout.

DIRAC's own RPC client behaves the same way, so a hung service hangs the caller.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any, Final

__all__ = ["SERVICE_VARIABLE", "call"]

SERVICE_VARIABLE: Final = "GANGA_MONITOR_DIRAC_SERVICE"
_MAX_ANSWER: Final = 256 * 1024 * 1024


def _address() -> tuple[str, int] | None:
    text = os.environ.get(SERVICE_VARIABLE, "")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host, int(port)


def call(method: str, params: Any = None) -> dict[str, Any]:
    """Ask the service; its answer in DIRAC's ``S_OK``/``S_ERROR`` shape (a failed connection is an ``S_ERROR``)."""
    address = _address()
    if address is None:
        return {"OK": False, "Message": f"no DIRAC service configured (set {SERVICE_VARIABLE}=host:port)"}
    request = json.dumps({"method": method, "params": params}).encode() + b"\n"
    try:
        with socket.create_connection(address) as connection:
            connection.sendall(request)
            with connection.makefile("rb") as stream:
                line = stream.readline(_MAX_ANSWER)
    except OSError as exc:
        return {"OK": False, "Message": f"Failed to connect to {address[0]}:{address[1]}: {exc}"}
    if not line.endswith(b"\n"):
        return {"OK": False, "Message": "the service closed the connection before answering"}
    try:
        answer = json.loads(line)
    except ValueError:
        return {"OK": False, "Message": "the service's answer is not valid JSON"}
    if not isinstance(answer, dict) or "OK" not in answer:
        return {"OK": False, "Message": "the service's answer is not a DIRAC answer"}
    return answer
