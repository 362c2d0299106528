"""One job in full: fields, state history with times, operations that touched it, errors, output tail."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from ..job_rows import JobRow
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
        """Redraw the sections whose text changed, when the job changed or a second passed (ages).

        The app calls this on every fold. Sections are aligned plain text, not Rich tables: a
        table is measured and laid out on every update (most of what Enter on a job cost), and
        a section whose text did not change is not updated at all (a second passing changes
        the ages in the summary alone).
        """
        row = self.store.rows.get(self.job_id)
        now = self.clock()
        shown = (None if row is None else row.version, int(now))
        if shown == self._shown:
            return
        self._shown = shown
        if row is None:
            self._show(self.summary, Text(f"job {self.job_id} is not in this session", style="bold red"))
            return
        self._show(self.summary, self._summary(row, now))
        self._show(self.history, self._history())
        self._show(self.operations, self._operations())
        errors = self.store.errors.get(self.job_id)
        self._show(self.errors, Text("\n".join(errors)) if errors else Text("none", style="dim"))
        self._show(self.output_view, Text(self.output))

    @staticmethod
    def _show(section: Static, text: Text) -> None:
        if not isinstance(section.content, Text) or section.content != text:
            section.update(text)

    @staticmethod
    def _summary(row: JobRow, now: float) -> Text:
        fields: list[tuple[str, str | Text]] = [
            ("job", f"{row.job_id}  {row.name}"),
            ("backend", f"{row.backend}  (group {row.group or '-'})"),
            ("status", f"{row.status.value} for {duration(now - row.status_since)}  {row.info}"),
            ("confirmed", f"{age(now, row.last_confirmed)} ago"),
        ]
        if row.next_poll_at is not None and row.status.is_active:
            fields.append(("next poll", f"in {duration(row.next_poll_at - now)}"))
        if row.exit_code is not None:
            fields.append(("exit code", str(row.exit_code)))
        if row.collect_error:
            fields.append(("outputs", Text(f"not collected: {row.collect_error} (c to try again)", style="bold red")))
        if row.warnings:
            explained = "; ".join(w.explanation for w in WarningKind if w in row.warnings)
            fields.append(("warnings", Text(explained, style="bold yellow")))
        text = Text()
        for index, (label, value) in enumerate(fields):
            if index:
                text.append("\n")
            text.append(f"{label:>10}  ", style="bold")
            text.append(value)
        return text

    def _history(self) -> Text:
        history = sorted(self.store.history.get(self.job_id, []), key=lambda step: step.at)
        lines = [f"{'time':<10}  {'from':<11} {'to':<11} {'after':>7}  {'by':<7} detail"]
        previous: float | None = None
        for step in history:
            old = step.old.value if step.old is not None else ""
            after = duration(step.at - previous) if previous is not None else ""
            lines.append(
                f"{_clock_time(step.at):<10}  {old:<11} {step.new.value:<11} {after:>7}  {step.source:<7} {step.info}"
            )
            previous = step.at
        text = Text("\n".join(lines))
        text.stylize("bold", 0, len(lines[0]))
        return text

    def _operations(self) -> Text:
        op_ids = self.store.ops_of.get(self.job_id, ())
        if not op_ids:
            return Text("none yet", style="dim")
        lines = [f"{'op':>7}  {'kind':<13} {'batch':>5} {'try':>3}  {'state':<10} {'latency':>7}  answer"]
        for op_id in op_ids:
            view = self.store.op_log.get(op_id)
            if view is None:
                lines.append(f"{op_id:>7}  {'':<13} {'':>5} {'':>3}  {'(forgotten)':<10}")
                continue
            latency = duration(view.latency) if view.latency is not None else ""
            state = view.state.replace("_", "-")
            lines.append(
                f"{op_id:>7}  {view.kind.value:<13} {len(view.job_ids):>5} {view.attempt:>3}  "
                f"{state:<10} {latency:>7}  {view.error or view.detail}"
            )
        text = Text("\n".join(lines))
        text.stylize("bold", 0, len(lines[0]))
        return text
