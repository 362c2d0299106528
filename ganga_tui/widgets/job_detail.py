"""One job in full: fields, state history with times, operations that touched it, errors, output tail."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from ..job_store import JobStore, WarningKind
from ._format import age, duration

__all__ = ["JobDetail"]


_NO_OUTPUT_YET = "(press t to fetch the tail of its stdout/stderr)"


def _clock_time(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at * 10) % 10}"


class JobDetail(VerticalScroll):
    """Sections about one job, refreshed when its row changes."""

    DEFAULT_CSS = """
    JobDetail { height: 1fr; }
    JobDetail > Static { height: auto; margin: 0 0 1 0; }
    JobDetail > .detail--title { text-style: bold; }
    """

    def __init__(self, store: JobStore, job_id: str, clock: Callable[[], float], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.store = store
        self.job_id = job_id
        """The job shown."""
        self.clock = clock
        self.output = _NO_OUTPUT_YET
        """The last output tail received, or why there is none."""
        self._shown: tuple[object, ...] | None = None
        """The row version and the second last drawn."""
        self.summary = Static(id="detail-summary")
        self.history = Static(id="detail-history")
        self.operations = Static(id="detail-ops")
        self.errors = Static(id="detail-errors")
        self.output_view = Static(id="detail-output", markup=False)

    def compose(self) -> ComposeResult:
        yield self.summary
        yield Static("state history", classes="detail--title")
        yield self.history
        yield Static("operations that touched it", classes="detail--title")
        yield self.operations
        yield Static("errors", classes="detail--title")
        yield self.errors
        yield Static("output (tail)", classes="detail--title")
        yield self.output_view

    def on_mount(self) -> None:
        self.refresh_from_store()

    def show_job(self, job_id: str) -> None:
        """Show another job, from the top."""
        self.job_id = job_id
        self.output = _NO_OUTPUT_YET
        self._shown = None
        self.refresh_from_store()
        self.scroll_home(animate=False)

    def show_output(self, text: str) -> None:
        """Show a fetched output tail (or the reason there is none)."""
        self.output = text
        self.output_view.update(Text(text))

    def refresh_from_store(self) -> None:
        """Redraw every section from the store when the job changed or a second passed (ages).

        The app calls this on every fold; the sections are Rich tables of unknown height, so an
        equal redraw would still cost a layout pass of the screen.
        """
        row = self.store.rows.get(self.job_id)
        now = self.clock()
        shown = (None if row is None else row.version, int(now))
        if shown == self._shown:
            return
        self._shown = shown
        if row is None:
            self.summary.update(Text(f"job {self.job_id} is not in this session", style="bold red"))
            return
        fields = Table.grid(padding=(0, 2))
        fields.add_column(style="bold", justify="right")
        fields.add_column()
        fields.add_row("job", f"{row.job_id}  {row.name}")
        fields.add_row("backend", f"{row.backend}  (group {row.group or '-'})")
        fields.add_row("status", f"{row.status.value} for {duration(now - row.status_since)}  {row.info}")
        fields.add_row("confirmed", f"{age(now, row.last_confirmed)} ago")
        if row.next_poll_at is not None and row.status.is_active:
            fields.add_row("next poll", f"in {duration(row.next_poll_at - now)}")
        if row.exit_code is not None:
            fields.add_row("exit code", str(row.exit_code))
        if row.collect_error:
            fields.add_row("outputs", Text(f"not collected: {row.collect_error} (c to try again)", style="bold red"))
        if row.warnings:
            fields.add_row(
                "warnings",
                Text("; ".join(w.explanation for w in WarningKind if w in row.warnings), style="bold yellow"),
            )
        self.summary.update(fields)
        self._render_history(now)
        self._render_ops()
        errors = self.store.errors.get(self.job_id)
        self.errors.update(Text("\n".join(errors)) if errors else Text("none", style="dim"))
        self.output_view.update(Text(self.output))

    def _render_history(self, now: float) -> None:
        history = sorted(self.store.history.get(self.job_id, []), key=lambda step: step.at)
        table = Table(box=None, pad_edge=False, show_edge=False)
        for column in ("time", "from", "to", "after", "by", "detail"):
            table.add_column(column, no_wrap=column != "detail")
        previous: float | None = None
        for step in history:
            table.add_row(
                _clock_time(step.at),
                step.old.value if step.old is not None else "",
                step.new.value,
                duration(step.at - previous) if previous is not None else "",
                step.source,
                step.info,
            )
            previous = step.at
        self.history.update(table)

    def _render_ops(self) -> None:
        op_ids = self.store.ops_of.get(self.job_id, ())
        if not op_ids:
            self.operations.update(Text("none yet", style="dim"))
            return
        table = Table(box=None, pad_edge=False, show_edge=False)
        for column in ("op", "kind", "batch", "try", "state", "latency", "answer"):
            table.add_column(column, no_wrap=column != "answer")
        for op_id in op_ids:
            view = self.store.op_log.get(op_id)
            if view is None:
                table.add_row(str(op_id), "", "", "", "(forgotten)", "", "")
                continue
            table.add_row(
                str(op_id),
                view.kind.value,
                str(len(view.job_ids)),
                str(view.attempt),
                view.state.replace("_", "-"),
                duration(view.latency) if view.latency is not None else "",
                view.error or view.detail,
            )
        self.operations.update(table)
