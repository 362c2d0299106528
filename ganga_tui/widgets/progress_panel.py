"""Progress of every job and of each group: a stacked bar of states, done/total and an ETA."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Final

from rich.segment import Segment
from rich.style import Style
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.strip import Strip
from textual.widget import Widget

from monitor_core import JobStatus

from ..job_store import GroupStats, JobStore
from ._format import duration, shorten

__all__ = ["ProgressPanel", "stacked_bar"]

_PARTS: Final = (
    ("completed", (JobStatus.COMPLETED,)),
    ("failed", (JobStatus.FAILED, JobStatus.KILLED, JobStatus.UNKNOWN, JobStatus.INCOMPLETE, JobStatus.REMOVED)),
    ("completing", (JobStatus.COMPLETING,)),
    ("running", (JobStatus.RUNNING,)),
    ("waiting", (JobStatus.NEW, JobStatus.SUBMITTING, JobStatus.SUBMITTED, JobStatus.TEMPLATE)),
)


def stacked_bar(counts: dict[JobStatus, int], total: int, width: int) -> list[tuple[str, int]]:
    """Split ``width`` cells among the state parts in proportion to their counts.

    Returns:
        (part name, cells) in bar order; cells add up to ``width`` when there are jobs.
    """
    if total <= 0 or width <= 0:
        return []
    sizes = [(name, sum(counts.get(s, 0) for s in statuses)) for name, statuses in _PARTS]
    cells = [count * width // total for _, count in sizes]
    leftover = width - sum(cells)
    # Cells lost to rounding go to the parts with the largest remainders.
    for i in sorted(range(len(sizes)), key=lambda i: -((sizes[i][1] * width) % total)):
        if leftover <= 0:
            break
        if sizes[i][1]:
            cells[i] += 1
            leftover -= 1
    # A part with any jobs shows at least one cell (one failure among thousands matters).
    for i, (_, count) in enumerate(sizes):
        if count and not cells[i]:
            largest = max(range(len(cells)), key=cells.__getitem__)
            if cells[largest] > 1:
                cells[largest] -= 1
                cells[i] = 1
    return [(name, n) for (name, _), n in zip(sizes, cells, strict=True) if n]


def _fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` cells with an ellipsis, as a no-wrap table cell would."""
    return text if len(text) <= width else text[: width - 1] + "…"


_PART_STATUSES: Final = tuple(statuses[0] for _, statuses in _PARTS)
"""One status standing for each part (``stacked_bar`` sums the parts' statuses)."""
_Line = tuple[str, tuple[int, ...], int, str, str]
"""label, jobs per part, total, "final/total", ETA."""


class ProgressPanel(Widget):
    """Overall progress on the first line, then one line per group when there is room."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "progress--completed",
        "progress--failed",
        "progress--completing",
        "progress--running",
        "progress--waiting",
    }

    DEFAULT_CSS = """
    ProgressPanel { height: auto; }
    ProgressPanel > .progress--completed { color: $success; }
    ProgressPanel > .progress--failed { color: $error; }
    ProgressPanel > .progress--completing { color: $secondary-lighten-3; }
    ProgressPanel > .progress--running { color: $primary-lighten-2; }
    ProgressPanel > .progress--waiting { color: $text-muted; }
    """

    def __init__(
        self, store: JobStore, clock: Callable[[], float], *, groups: bool = True, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.store = store
        self.clock = clock
        self.show_groups = groups
        """Whether a line per group follows the overall one."""
        self._shown: tuple[tuple[_Line, ...], str | None] | None = None
        """The lines last drawn, and the collect bound's text."""
        # A few panels' worth: a line drawn is 3 KB with its caches (see JobTable).
        self._strips: LRUCache[tuple[object, ...], Strip] = LRUCache(32)

    @staticmethod
    def _eta(stats: GroupStats, final: int, now: float) -> str:
        if stats.total and final == stats.total:
            return "done"
        eta = stats.eta(now)
        return "?" if eta is None else f"~{duration(eta)}"

    def _line(self, label: str, stats: GroupStats, now: float) -> _Line:
        counts = stats.counts
        parts = tuple(sum(counts.get(s, 0) for s in statuses) for _, statuses in _PARTS)
        total = sum(parts)
        final = parts[0] + parts[1]
        return (label, parts, total, f"{final}/{total}", self._eta(stats, final, now))

    def _lines(self) -> tuple[tuple[_Line, ...], str | None]:
        now = self.clock()
        lines = [self._line("all jobs", self.store.overall(), now)]
        if self.show_groups:
            lines += [self._line(name or "(no group)", group, now) for name, group in sorted(self.store.groups.items())]
        bound = None if self.show_groups else self.store.collect_bound()
        return tuple(lines), None if bound is None else f"collect ≥{duration(bound)}"

    def _ensure_shown(self) -> tuple[tuple[_Line, ...], str | None]:
        if self._shown is None:
            self._shown = self._lines()
        return self._shown

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        # One line per group: known without rendering anything (a Rich table's height is not).
        return len(self._ensure_shown()[0])

    def _done_width(self, lines: tuple[_Line, ...]) -> int:
        return max(9, *(len(done) for _, _, _, done, _ in lines))

    def render_line(self, y: int) -> Strip:
        lines, bound = self._ensure_shown()
        width = self.size.width
        base = self.rich_style
        if y >= len(lines):
            return Strip.blank(width, base)
        done_width = self._done_width(lines)
        key = (lines[y], bound, width, done_width, base)
        strip = self._strips.get(key)
        if strip is None:
            strip = self._render_line(lines[y], bound, width, done_width, base)
            self._strips[key] = strip
        return strip

    def _render_line(self, line: _Line, bound: str | None, width: int, done_width: int, base: Style) -> Strip:
        """label, bar, done/total, ETA (and the collect bound), one space apart."""
        label, parts, total, done, eta = line
        # Group names line up in the side panel; the overall line alone needs room for its one label.
        label_width = 14 if self.show_groups else len(label)
        bar_width = max(6, width - label_width - done_width - 6 - 3)
        if bound is not None:
            bar_width = max(6, bar_width - 17)
        label_style = base + Style(bold=True) if label == "all jobs" else base
        segments = [Segment(f"{shorten(label, label_width):<{label_width}} ", label_style)]
        counts = dict(zip(_PART_STATUSES, parts, strict=True))
        for part, cells in stacked_bar(counts, total, bar_width):
            segments.append(Segment("█" * cells, base + self.get_component_rich_style(f"progress--{part}")))
        if not total:
            segments.append(Segment("·" * bar_width, base + self.get_component_rich_style("progress--waiting")))
        segments.append(Segment(f" {_fit(done, done_width):>{done_width}} {_fit(eta, 6):>6}", base))
        if bound is not None:
            segments.append(Segment(f" {_fit(bound, 16):<16}", base + Style(dim=True)))
        return Strip(segments).adjust_cell_length(width, base)

    def refresh_from_store(self) -> None:
        """Redraw when what is shown changed (counts, ETAs, the bound); resize when groups came or went.

        Each line is drawn from a cache keyed by what it shows, and only the lines that changed
        are repainted; a layout pass only when groups came or went.
        """
        shown = self._lines()
        old = self._shown
        if shown == old:
            return
        self._shown = shown
        if old is None or len(shown[0]) != len(old[0]) or shown[1] != old[1]:
            self.refresh(layout=self.show_groups)
            return
        width = self.size.width
        if self._done_width(shown[0]) != self._done_width(old[0]):
            self.refresh()
            return
        for y, (new_line, old_line) in enumerate(zip(shown[0], old[0], strict=True)):
            if new_line != old_line:
                self.refresh(Region(0, y, width, 1))
