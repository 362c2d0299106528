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

    def _bar(self, stats: GroupStats, width: int) -> Text:
        text = Text()
        for part, cells in stacked_bar(dict(stats.counts), stats.total, width):
            text.append("█" * cells, style=self.get_component_rich_style(f"progress--{part}"))
        if not stats.total:
            text.append("·" * width, style=self.get_component_rich_style("progress--waiting"))
        return text

    def _eta(self, stats: GroupStats, now: float) -> str:
        eta = stats.eta(now)
        if stats.total and stats.final == stats.total:
            return "done"
        return "?" if eta is None else f"~{duration(eta)}"

    def render(self) -> RenderableType:
        now = self.clock()
        label_width = 14
        width = max(6, self.size.width - label_width - 9 - 6 - 3)
        table = Table.grid(padding=(0, 1))
        table.add_column(width=label_width, no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column(justify="right", no_wrap=True, width=9)
        table.add_column(justify="right", no_wrap=True, width=6)
        overall = self.store.overall()
        bound = None if self.show_groups else self.store.collect_bound()
        if bound is not None:
            # The best the service's allowance permits for the queued outputs, beside the plan's ETA.
            table.add_column(justify="left", no_wrap=True, width=16)
            width = max(6, width - 17)
        stats_rows = [("all jobs", overall)]
        if self.show_groups:
            stats_rows += [(name or "(no group)", group) for name, group in sorted(self.store.groups.items())]
        for label, stats in stats_rows:
            cells: list[RenderableType] = [
                Text(shorten(label, label_width), style="bold" if label == "all jobs" else ""),
                self._bar(stats, width),
                f"{stats.final}/{stats.total}",
                self._eta(stats, now),
            ]
            if bound is not None:
                cells.append(Text(f"collect ≥{duration(bound)}", style="dim"))
            table.add_row(*cells)
        return table

    def refresh_from_store(self) -> None:
        """Redraw, and resize when the number of groups changed."""
        self.refresh(layout=self.show_groups)
