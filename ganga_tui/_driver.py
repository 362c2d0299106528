"""The terminal driver, told to hand keys on without delay and to say when one arrives.

Two things between a key and the screen are the driver's, not the app's:

- **Esc.** A lone ``ESC`` byte may start an escape sequence, so the parser waits
  ``ESCDELAY`` for more before it calls it the Escape key; Textual's input thread then
  sleeps in ``select`` for 0.1 s at a time and only notices the wait is over when it wakes.
  Esc reached the app 100-200 ms after it was typed. Here the thread wakes when the
  parser's wait ends, and ``ganga-monitor-tui`` sets a default ``ESCDELAY`` of 10 ms (a
  terminal, tmux or ssh sends a sequence in one write; a user's own ``ESCDELAY`` wins).
- **Pre-emption.** The app learns that a key arrived as soon as it is read, from this
  thread, before the key waits in the message queue behind a fold or a repaint; work that
  looks at ``app.input_at`` steps aside for it.
"""

from __future__ import annotations

import os
import selectors
import time
from codecs import getincrementaldecoder
from typing import Final, Protocol

from textual import constants, events
from textual._parser import ParseError
from textual._xterm_parser import XTermParser
from textual.driver import Driver
from textual.message import Message

__all__ = ["InputNoted", "noting_input"]
_IDLE_WAKE: Final = 0.1
"""Seconds the input thread sleeps when nothing is pending (as Textual's does)."""


class InputNoted(Protocol):
    """An app that wants to know when a key arrived."""

    input_at: float
    """When the last key was read (``time.monotonic``)."""


def noting_input(base: type[Driver], app: InputNoted) -> type[Driver]:
    """``base``, noting each key's arrival on ``app`` (and, on a Linux terminal, handing Esc on promptly)."""

    class NotingDriver(base):  # type: ignore[valid-type, misc]
        def process_message(self, message: Message) -> None:
            if isinstance(message, events.Key):
                app.input_at = time.monotonic()  # one attribute store: safe from the input thread
            super().process_message(message)

    if base.__name__ != "LinuxDriver" or not hasattr(base, "_run_input_thread"):
        return NotingDriver

    class PromptLinuxDriver(NotingDriver):
        def run_input_thread(self) -> None:
            """Read keys; after a read, wake when an escape sequence's wait would end, not 0.1 s later."""
            fileno: int = self.fileno
            selector = selectors.SelectSelector()
            selector.register(fileno, selectors.EVENT_READ)
            parser = XTermParser(self._debug)
            decode = getincrementaldecoder("utf-8")().decode
            # A little past the parser's own deadline, so that its tick finds the wait over.
            wake_after_read = constants.ESCAPE_DELAY + 0.002
            short_wakes = 0
            """Wakes left at the short timeout: two, in case the first comes a hair before the parser's deadline."""

            def process(ready: list[tuple[selectors.SelectorKey, int]], *, final: bool = False) -> bool:
                read_any = False
                for _key, mask in ready:
                    if mask & selectors.EVENT_READ:
                        data = decode(os.read(fileno, 1024 * 4), final=final)
                        if not data:
                            break
                        read_any = True
                        for event in parser.feed(data):
                            self.process_message(event)
                for event in parser.tick():
                    self.process_message(event)
                return read_any

            try:
                while not self.exit_event.is_set():
                    timeout = wake_after_read if short_wakes else _IDLE_WAKE
                    short_wakes = 2 if process(selector.select(timeout)) else max(0, short_wakes - 1)
                selector.unregister(fileno)
                process(selector.select(_IDLE_WAKE), final=True)
            finally:
                selector.close()
                try:
                    for _event in parser.feed(""):
                        pass
                except (EOFError, ParseError):
                    pass  # the terminal is going away, as Textual's own thread allows

    return PromptLinuxDriver
