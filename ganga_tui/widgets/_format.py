"""Short human forms of durations and ages for narrow columns, and a quiet update of one-line statics."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

__all__ = ["age", "duration", "show", "shorten"]


def duration(seconds: float | None) -> str:
    """``0.3s``, ``12s``, ``4m05``, ``2h10``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        minutes, rest = divmod(int(seconds), 60)
        return f"{minutes}m{rest:02d}"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h{rest // 60:02d}"


def age(now: float, then: float | None) -> str:
    """How long ago ``then`` was; ``-`` when it never happened."""
    if not then:
        return "-"
    return duration(now - then)


def shorten(name: str, width: int) -> str:
    """Fit ``name`` in ``width`` cells, eliding its middle: job and group names differ at their ends."""
    if len(name) <= width:
        return name
    if width <= 1:
        return name[:width]
    head = (width - 1) // 2
    return name[:head] + "…" + name[len(name) - (width - 1 - head) :]


def show(widget: Static, content: str | Text) -> bool:
    """Put ``content`` on a one-line static if it differs from what it shows; True if it did.

    An equal update would still cost Textual a repaint, and an update with layout a reflow
    of the whole screen: these statics have fixed heights, so neither is needed.
    """
    if widget.content == content:
        return False
    widget.update(content, layout=False)
    return True
