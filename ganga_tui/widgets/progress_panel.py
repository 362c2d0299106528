"""Progress of every job and of each group: a stacked bar of states, done/total and an ETA."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Final

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
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

    def _bar(self, parts: tuple[int, ...], total: int, width: int) -> Text:
        text = Text()
        counts = dict(zip(_PART_STATUSES, parts, strict=True))
        for part, cells in stacked_bar(counts, total, width):
            text.append("█" * cells, style=self.get_component_rich_style(f"progress--{part}"))
        if not total:
            text.append("·" * width, style=self.get_component_rich_style("progress--waiting"))
        return text

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

    def render(self) -> RenderableType:
        if self._shown is None:
            self._shown = self._lines()
        lines, bound = self._shown
        label_width = 14
        width = max(6, self.size.width - label_width - 9 - 6 - 3)
        table = Table.grid(padding=(0, 1))
        table.add_column(width=label_width, no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column(justify="right", no_wrap=True, width=9)
        table.add_column(justify="right", no_wrap=True, width=6)
        if bound is not None:
            # The best the service's allowance permits for the queued outputs, beside the plan's ETA.
            table.add_column(justify="left", no_wrap=True, width=16)
            width = max(6, width - 17)
        for label, parts, total, done, eta in lines:
            cells: list[RenderableType] = [
                Text(shorten(label, label_width), style="bold" if label == "all jobs" else ""),
                self._bar(parts, total, width),
                done,
                eta,
            ]
            if bound is not None:
                cells.append(Text(bound, style="dim"))
            table.add_row(*cells)
        return table

    def refresh_from_store(self) -> None:
        """Redraw when what is shown changed (counts, ETAs, the bound); resize when groups came or went.

        A Rich table of bars per group costs a render and, with its height unknown to Textual, a
        layout pass: neither is spent on a frame that would draw the same lines.
        """
        shown = self._lines()
        if shown == self._shown:
            return
        grew = self._shown is None or len(shown[0]) != len(self._shown[0])
        self._shown = shown
        self.refresh(layout=self.show_groups and grew)
