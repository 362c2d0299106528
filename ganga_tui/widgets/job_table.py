"""The job table: a line-API scroll view over :class:`~ganga_tui.job_store.JobStore`.

Only visible lines are rendered, each from a cache keyed by the job's row version, so a
table of 100,000 jobs repaints in about the time of an empty frame. The store's view is
rebuilt (filter and sort) only when membership or order may have changed, and never more
often than its own cost allows while events stream in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.reactive import Reactive, reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from monitor_core import JobStatus

from ..job_store import JobRow, JobStore, SortKey
from ._format import age, duration, shorten

__all__ = ["JobTable"]

_STATUS_CLASS: Final = {
    JobStatus.COMPLETED: "jobtable--completed",
    JobStatus.FAILED: "jobtable--failed",
    JobStatus.KILLED: "jobtable--failed",
    JobStatus.UNKNOWN: "jobtable--failed",
    JobStatus.RUNNING: "jobtable--running",
    JobStatus.COMPLETING: "jobtable--completing",
}
_COLUMN_TITLES: Final[dict[SortKey, str]] = {
    "warnings": "!",
    "id": "id",
    "name": "name",
    "backend": "backend",
    "status": "status",
    "updated": "updated",
    "next_poll": "next poll",
}


@dataclass(frozen=True, slots=True)
class _Layout:
    name: int
    info: int

    @classmethod
    def for_width(cls, width: int) -> _Layout:
        # Fixed columns: marks 2, id 7, backend 10, status 11, updated 8, next poll 10, and gaps.
        rest = max(8, width - 53)
        name = min(rest, 36)
        info = rest - name - 1 if rest - name - 1 >= 12 else 0
        return cls(name, info)


_CACHED_LINES: Final = 96
"""Lines kept drawn: a tall terminal's screen (the key holds the second, so they serve within it only)."""


class JobTable(ScrollView, can_focus=True):
    """Every job the filter lets through, one line each, with a cursor.

    Args:
        store: where the rows come from.
        clock: wall-clock time now, in epoch seconds (frozen in tests).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor_up", "Up", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("pageup,ctrl+b", "page_up", "Page up", show=False),
        Binding("pagedown,ctrl+f", "page_down", "Page down", show=False),
        Binding("home", "first", "First job", show=False),
        Binding("end,G", "last", "Last job", show=False),
        Binding("enter", "select", "Detail"),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "jobtable--header",
        "jobtable--cursor",
        "jobtable--warning",
        "jobtable--completed",
        "jobtable--failed",
        "jobtable--running",
        "jobtable--completing",
        "jobtable--dim",
    }

    virtual_size = Reactive(Size(0, 0))
    """The rows' height, without a layout pass: the table's own size is fixed, and a filter that
    changed the number of rows arranged the whole screen again, twice (the height, then the
    scroll bar), 13 ms at 200x50 on each Esc of the filter."""

    DEFAULT_CSS = """
    JobTable { background: $surface; scrollbar-gutter: stable; }
    JobTable > .jobtable--header { text-style: bold; background: $panel; }
    JobTable > .jobtable--cursor { background: $accent 40%; }
    JobTable:focus > .jobtable--cursor { background: $accent 70%; text-style: bold; }
    JobTable > .jobtable--warning { color: $warning; text-style: bold; }
    JobTable > .jobtable--completed { color: $success; }
    JobTable > .jobtable--failed { color: $error; }
    JobTable > .jobtable--running { color: $primary-lighten-2; }
    JobTable > .jobtable--completing { color: $secondary-lighten-3; }
    JobTable > .jobtable--dim { color: $text-muted; }
    """

    cursor_row: reactive[int] = reactive(0, always_update=True, repaint=False)
    """Index of the highlighted row in the store's view."""

    class JobSelected(Message):
        """Enter was pressed (or a row double-clicked) on a job."""

        def __init__(self, table: JobTable, job_id: str) -> None:
            super().__init__()
            self.table = table
            self.job_id = job_id

        @property
        def control(self) -> JobTable:
            return self.table

    def __init__(self, store: JobStore, clock: Callable[[], float], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.store = store
        self.clock = clock
        self.cursor_job: str | None = None
        """The highlighted job's id; the cursor follows it when the view reorders."""
        # A Strip with its seven caches and the crops made of it is 3 KB; 2,000 of them held 6 MB.
        self._cache: LRUCache[tuple[object, ...], Strip] = LRUCache(_CACHED_LINES)
        self._generation = -1
        self._rebuild_gap = 0.0
        self._last_rebuild = float("-inf")
        self._painted: tuple[object, ...] = ()
        self._painted_second = 0
        self.rebuilds = 0
        """How many times the view was rebuilt (read by tests and the benchmark)."""

    # -- keeping up with the store -------------------------------------------------------------

    def refresh_from_store(self, *, force: bool = False) -> None:
        """Repaint for new events; rebuild the view first if it may be stale.

        Args:
            force: rebuild now even if the last rebuild was very recent (a user's action).
        """
        store = self.store
        started = time.perf_counter()
        if store.view_dirty and (force or started - self._last_rebuild >= self._rebuild_gap):
            store.refresh_view()
            cost = time.perf_counter() - started
            self._last_rebuild = started
            # Under a stream of events, spend at most a tenth of the time rebuilding.
            self._rebuild_gap = min(1.0, cost * 10)
            self.rebuilds += 1
            self._sync_size()
            self._follow_cursor_job()
            self.refresh()
        elif store.jobs_generation != self._generation or int(self.clock()) != self._painted_second:
            # Some job changed, or a second passed (ages): repaint only if a visible row shows it.
            signature = self._visible_signature()
            if signature != self._painted:
                self._painted = signature
                self.refresh()
        self._generation = store.jobs_generation

    def _visible_signature(self) -> tuple[object, ...]:
        """What the visible rows show: each one's job and version, the cursor, the second."""
        store = self.store
        top = self.scroll_offset.y
        bottom = min(store.row_count, top + max(1, self.scrollable_content_region.height - 1))
        self._painted_second = int(self.clock())
        rows = tuple((row.job_id, row.version) for row in map(store.get_row_at, range(top, bottom)))
        return (rows, self.cursor_row, store.row_count, self._painted_second)

    def _sync_size(self) -> None:
        size = Size(0, self.store.row_count + 1)
        if size != self.virtual_size:
            self.virtual_size = size
            if self.is_mounted:
                # What the layout pass would do for this widget alone: the scroll bar's thumb and
                # the scroll position, kept within the new height.
                self._scroll_update(size)

    def _follow_cursor_job(self) -> None:
        index = self.store.index_of(self.cursor_job) if self.cursor_job is not None else None
        if index is None:
            index = min(self.cursor_row, max(0, self.store.row_count - 1))
        self.cursor_row = index

    def validate_cursor_row(self, value: int) -> int:
        return max(0, min(value, self.store.row_count - 1))

    def watch_cursor_row(self, old: int, new: int) -> None:
        count = self.store.row_count
        self.cursor_job = self.store.get_row_at(new).job_id if count else None
        self._scroll_cursor_into_view()
        self.refresh()

    def _scroll_cursor_into_view(self) -> None:
        rows_visible = max(1, self.scrollable_content_region.height - 1)
        top = self.scroll_offset.y
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True)
        elif self.cursor_row >= top + rows_visible:
            self.scroll_to(y=self.cursor_row - rows_visible + 1, animate=False, immediate=True)

    @property
    def cursor_row_data(self) -> JobRow | None:
        """The highlighted job's row, if any."""
        if not self.store.row_count:
            return None
        return self.store.get_row_at(self.cursor_row)

    # -- actions -------------------------------------------------------------------------------

    def action_cursor_up(self) -> None:
        self.cursor_row -= 1

    def action_cursor_down(self) -> None:
        self.cursor_row += 1

    def action_page_up(self) -> None:
        self.cursor_row -= max(1, self.scrollable_content_region.height - 1)

    def action_page_down(self) -> None:
        self.cursor_row += max(1, self.scrollable_content_region.height - 1)

    def action_first(self) -> None:
        self.cursor_row = 0

    def action_last(self) -> None:
        self.cursor_row = self.store.row_count - 1

    def action_select(self) -> None:
        if self.cursor_job is not None:
            self.post_message(self.JobSelected(self, self.cursor_job))

    def on_click(self, event: events.Click) -> None:
        if event.y >= 1:
            self.cursor_row = self.scroll_offset.y + event.y - 1
            if event.chain >= 2:
                self.action_select()

    def on_resize(self, event: events.Resize) -> None:
        self._sync_size()
        self._cache.clear()
        # Panels above grow as backends and groups appear; the cursor (End's last row) stays in view.
        self._scroll_cursor_into_view()

    def on_focus(self) -> None:
        self._refresh_cursor_line()

    def on_blur(self) -> None:
        self._refresh_cursor_line()

    def _refresh_cursor_line(self) -> None:
        # Only the cursor row looks different with focus: repaint that line, not the table.
        self.refresh_line(self.cursor_row + 1)  # line 0 is the header

    # -- rendering -----------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        layout = _Layout.for_width(width)
        if y == 0:
            return self._header(width, layout)
        index = self.scroll_offset.y + y - 1
        if index >= self.store.row_count:
            return Strip.blank(width, self.rich_style)
        row = self.store.get_row_at(index)
        now = self.clock()
        selected = index == self.cursor_row
        # Ages move once a second, so the second is part of the key; within it, repaints are free.
        # Focus changes the cursor row's look only: the other rows' lines stay good.
        key = (row.job_id, row.version, width, selected, selected and self.has_focus, int(now))
        strip = self._cache.get(key)
        if strip is None:
            strip = self._render_row(row, now, width, layout, selected)
            self._cache[key] = strip
        return strip

    def _header(self, width: int, layout: _Layout) -> Strip:
        titles = dict(_COLUMN_TITLES)
        arrow = "▼" if self.store.sort_reverse else "▲"
        titles[self.store.sort_key] = titles[self.store.sort_key] + arrow
        text = (
            f"{titles['warnings']:<2}{titles['id']:>7} {titles['name']:<{layout.name}.{layout.name}} "
            f"{titles['backend']:<10} {titles['status']:<11} {titles['updated']:>8} {titles['next_poll']:>10}"
        )
        if layout.info:
            text += f" {'detail':<{layout.info}.{layout.info}}"
        style = self.rich_style + self.get_component_rich_style("jobtable--header")
        return Strip([Segment(text, style)]).adjust_cell_length(width, style)

    def _next_poll(self, row: JobRow, now: float) -> str:
        if row.polling:
            return "polling"
        if row.next_poll_at is None or not row.status.is_active:
            return "-"
        left = row.next_poll_at - now
        return f"in {duration(left)}" if left >= 0 else f"due {duration(-left)}"

    def _render_row(self, row: JobRow, now: float, width: int, layout: _Layout, selected: bool) -> Strip:
        base = self.rich_style
        if selected:
            base = base + self.get_component_rich_style("jobtable--cursor")
        status_class = _STATUS_CLASS.get(row.status)
        status_style = base + self._foreground(status_class) if status_class else base
        warning_style = base + self._foreground("jobtable--warning")
        marks = "".join(sorted(w.mark for w in row.warnings))[:2]
        middle = f"{row.job_id:>7.7} {shorten(row.name, layout.name):<{layout.name}} {row.backend:<10.10} "
        tail = f" {age(now, row.last_confirmed):>8} {self._next_poll(row, now):>10}"
        if layout.info:
            tail += f" {row.info:<{layout.info}.{layout.info}}"
        segments = [
            Segment(f"{marks:<2}", warning_style),
            Segment(middle, base),
            Segment(f"{row.status.value:<11.11}", status_style),
            Segment(tail, base),
        ]
        return Strip(segments).adjust_cell_length(width, base)

    def _foreground(self, component: str) -> Style:
        # Only the colour and weight: the row's own background (cursor or not) must show through.
        style = self.get_component_rich_style(component)
        return Style(color=style.color, bold=style.bold, italic=style.italic)

    def clear_cache(self) -> None:
        """Forget rendered lines (after a theme change)."""
        self._cache.clear()
