"""Terminal notifications: the bell, and desktop notifications by OSC 9 and OSC 777.

Terminals that know neither escape ignore it, so both are sent. Plain Python: the app
hands a writer that reaches the terminal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Notifier", "osc9", "osc777"]

BELL = "\a"


def _clean(text: str) -> str:
    # Control characters or ';' would end or split the escape sequence early.
    return "".join(ch for ch in text if ch.isprintable()).replace(";", ",")


def osc9(message: str) -> str:
    """A desktop notification in the iTerm2/ConEmu/Windows Terminal form."""
    return f"\x1b]9;{_clean(message)}\x07"


def osc777(title: str, body: str) -> str:
    """A desktop notification in the rxvt/foot/kitty/VTE form."""
    return f"\x1b]777;notify;{_clean(title)};{_clean(body)}\x07"


@dataclass(slots=True)
class Notifier:
    """Rings the bell and raises a desktop notification, when enabled.

    Args:
        write: sends raw text to the terminal.
        enabled: whether notifications are on.
    """

    write: Callable[[str], None]
    enabled: bool = False
    sent: list[tuple[str, str]] = field(default_factory=list)
    """Every (title, body) announced, newest last."""

    def announce(self, title: str, body: str) -> bool:
        """Notify if enabled; returns whether anything was sent."""
        if not self.enabled:
            return False
        self.sent.append((title, body))
        self.write(BELL + osc9(f"{title}: {body}") + osc777(title, body))
        return True

    def news(self, failures: list[str], groups_done: list[str]) -> int:
        """Announce failed jobs and finished groups, one notification each kind.

        Returns:
            How many notifications were sent.
        """
        sent = 0
        if failures:
            shown = ", ".join(failures[:5]) + (" ..." if len(failures) > 5 else "")
            noun = "job" if len(failures) == 1 else "jobs"
            sent += self.announce(f"{len(failures)} {noun} failed", shown)
        if groups_done:
            shown = ", ".join(groups_done[:5]) + (" ..." if len(groups_done) > 5 else "")
            noun = "group" if len(groups_done) == 1 else "groups"
            sent += self.announce(f"{len(groups_done)} {noun} finished", shown)
        return sent
