"""Subprocess worker: builds a blocking client and answers calls on stdin/stdout.

Run as ``python -m monitor_core.backends._worker_main MODULE:FACTORY OPTIONS_JSON``.
Requests and replies are length-prefixed JSON frames; the worker ends at end of input.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from typing import Any

from ._runners import read_frame, write_frame


def _load_client(factory: str, options: dict[str, Any]) -> Any:
    module_name, _, attribute = factory.partition(":")
    return getattr(importlib.import_module(module_name), attribute)(**options)


def main(argv: list[str]) -> int:
    """Serve calls until stdin closes."""
    factory, options = argv[0], json.loads(argv[1])
    client = _load_client(factory, options)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # The protocol owns stdout; stray prints from the client go to stderr.
    sys.stdout = sys.stderr
    while True:
        request = read_frame(stdin)
        if request is None:
            return 0
        try:
            value = getattr(client, request["method"])(*request["args"])
            reply = {"id": request["id"], "ok": True, "value": value}
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
            traceback.print_exc(file=sys.stderr)
            reply = {"id": request["id"], "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        write_frame(stdout, reply)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
