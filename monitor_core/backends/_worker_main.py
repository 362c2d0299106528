"""Subprocess worker: builds a blocking client and answers calls on stdin/stdout.

Run as ``python -m monitor_core.backends._worker_main MODULE:FACTORY OPTIONS_JSON``.
Requests and replies are length-prefixed JSON frames; the worker ends at end of input.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
from typing import Any

from ._runners import read_frame, reply_to, write_frame


def _load_client(factory: str, options: dict[str, Any]) -> Any:
    module_name, _, attribute = factory.partition(":")
    return getattr(importlib.import_module(module_name), attribute)(**options)


def _call(client: Any, request: dict[str, Any]) -> Any:
    return getattr(client, request["method"])(*request["args"])


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
        write_frame(stdout, reply_to(request["id"], functools.partial(_call, client, request)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
