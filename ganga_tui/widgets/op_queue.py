"""The monitoring operation queue: queued and in-flight operations, oldest first; finished ones fade.

A line-API widget: it renders only the rows that fit, each line from a cache keyed by what
the line shows, and a refresh repaints only the lines whose text changed. In a fetch flood
thousands of operations wait, the panel shows a screenful, and most frames change a few ages.
"""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar, Final

from rich.segment import Segment
from rich.style import Style
from textual.cache import LRUCache
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget

from ..job_store import JobStore, OpView
from ._format import duration

__all__ = ["OpQueue"]

_SHOWN: Final = 80
"""Rows asked of the store before the widget knows its height."""
_MIN_GAP: Final = 0.25
"""Seconds between repaints when no operation changed (ages and fading only)."""
_COLUMNS: Final = (
    # title, width, right-aligned
    ("kind", 5, False),
    ("backend", 9, False),
    ("jobs", 4, True),
    ("age", 4, True),
    ("try", 3, True),
    ("state", 0, False),
)
"""The last column takes what is left of the line."""
_STATE_WORDS: Final = {"in_flight": "calling", "retrying": "retry"}

_Row = tuple[str, str, str, str, str, str, str]
"""The cells of one line (kind, backend, jobs, age, try, state) and their style."""


def _state_style(view: OpView, fade: float) -> str:
    if view.finished:
        base = "red" if view.state != "done" else ""
        return f"{base} dim" if fade < 0.5 else f"{base} dim italic"
    if view.state == "in_flight":
        return "bold"
    if view.state == "retrying":
        return "yellow"
    return ""


@lru_cache(maxsize=64)
def _parse_style(text: str) -> Style:
    return Style.parse(text) if text.strip() else Style()


def _layout(cells: tuple[str, ...], width: int, *, header: bool = False) -> str:
    """The cells padded into their columns, one space either side of each (as a table with padding 1).

    Titles are left-aligned over every column, figures right-aligned in theirs.
    """
    parts: list[str] = []
    used = 0
    for (_, size, right), cell in zip(_COLUMNS, cells, strict=True):
        if size == 0:
            size = max(0, width - used - 2)
        text = cell[:size]
        parts.append(f" {text:>{size}} " if right and not header else f" {text:<{size}} ")
        used += size + 2
    return "".join(parts)


class OpQueue(Widget):
    """Operations, one line each: live ones oldest first, then the finished ones, fading."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"opqueue--header"}

    DEFAULT_CSS = """
    OpQueue { height: 1fr; background: $surface; }
    OpQueue > .opqueue--header { text-style: bold; background: $panel; }
    """

    def __init__(self, store: JobStore, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.store = store
        self.shown_ids: tuple[int, ...] = ()
        """The operations on screen, top to bottom."""
        self._rows: list[_Row] = []
        # A few screens of the panel: a line drawn is 3 KB with its caches (see JobTable).
        self._cache: LRUCache[tuple[_Row, int, Style], Strip] = LRUCache(32)
        self._generation = -1
        self._painted_at = float("-inf")

    @staticmethod
    def _row(view: OpView, fade: float, now: float) -> _Row:
        since = view.started_at if view.state == "in_flight" and view.started_at else view.enqueued_at
        end = view.finished_at if view.finished_at is not None else now
        state = _STATE_WORDS.get(view.state, view.state)
        if view.finished and view.latency is not None:
            state = f"{state} {duration(view.latency)}"
        return (
            view.kind.replace("fetch_output", "fetch"),
            view.backend,
            str(len(view.job_ids)),
            duration(end - since),
            str(view.attempt),
            state,
            _state_style(view, fade),
        )

    def refresh_from_store(self, now: float) -> None:
        """Bring the lines in line with the store's operations; repaint only the lines that changed."""
        store = self.store
        # Ages move by the tenth of a second, fading by the half second: a repaint at most every
        # _MIN_GAP, or at once when operations came, went or moved.
        if store.ops_generation == self._generation and now - self._painted_at < _MIN_GAP:
            return
        self._generation = store.ops_generation
        self._painted_at = now
        fits = self.size.height - 1 if self.size.height else _SHOWN
        shown = store.op_view.shown(max(0, fits))
        self.shown_ids = tuple(view.op_id for view in shown)
        rows = [self._row(view, store.fade(view, now), now) for view in shown]
        old = self._rows
        self._rows = rows
        width = self.size.width
        for index in range(max(len(rows), len(old))):
            if index >= len(rows) or index >= len(old) or rows[index] != old[index]:
                self.refresh(Region(0, index + 1, width, 1))
        states = store.op_view.live_states
        total = len(store.ops)
        more = f", {total - len(shown)} more" if total > len(shown) else ""
        title = f"operations: {states['in_flight']} in flight, {states['queued']} queued{more}"
        if title != self.border_title:
            self.border_title = title

    def on_resize(self) -> None:
        # More or fewer rows fit: ask the store again at the next refresh.
        self._generation = -1
        self._painted_at = float("-inf")

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        if y == 0:
            style = base + self.get_component_rich_style("opqueue--header")
            header = _layout(tuple(title for title, _, _ in _COLUMNS), width, header=True)
            return Strip([Segment(header, style)]).adjust_cell_length(width, style)
        index = y - 1
        if index >= len(self._rows):
            return Strip.blank(width, base)
        row = self._rows[index]
        key = (row, width, base)
        strip = self._cache.get(key)
        if strip is None:
            style = base + _parse_style(row[-1])
            strip = Strip([Segment(_layout(row[:-1], width), style)]).adjust_cell_length(width, base)
            self._cache[key] = strip
        return strip
