"""The job detail screen: one job in full, with its actions."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Static

from monitor_core import CollectOutput, JobStatus, RefreshJob, TailOutput

from ..widgets.job_detail import JobDetail
from ..widgets.key_footer import KeyFooter

if TYPE_CHECKING:
    from ..app import GangaMonitorApp

__all__ = ["JobDetailScreen"]


class JobDetailScreen(Screen[None]):
    """A job's fields, history, operations, errors and output tail.

    The app keeps one, installed, and shows the next job on it (:meth:`show_job`): composing a
    screen per Enter (a dozen widgets mounted and styled, the footer's keys built) was most of
    what Enter cost.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "app.pop_screen", "Back"),
        Binding("r", "refresh_job", "Refresh job now"),
        Binding("t", "tail_output", "Fetch output tail"),
        Binding("c", "collect_output", "Collect outputs now"),
    ]

    def __init__(self, job_id: str) -> None:
        super().__init__()
        self.job_id = job_id
        """The job shown."""
        self._greeted: str | None = None
        """The job whose outputs or tail were asked for when it was shown."""

    @property
    def monitor(self) -> GangaMonitorApp:
        """The app, with its store and source."""
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static(f"job {self.job_id}", id="detail-title", classes="title-bar")
        yield JobDetail(self.monitor.store, self.job_id, self.monitor.clock, id="detail")
        yield KeyFooter()

    def show_job(self, job_id: str) -> None:
        """Show another job on this screen (before it is pushed again)."""
        self.job_id = job_id
        if self.is_mounted:
            self.query_one("#detail-title", Static).update(f"job {job_id}")
            self.query_one(JobDetail).show_job(job_id)

    def on_screen_resume(self) -> None:
        # Once per job shown, not on coming back from a help or prompt screen over it.
        if self._greeted == self.job_id:
            return
        self._greeted = self.job_id
        row = self.monitor.store.rows.get(self.job_id)
        if row is not None and row.status == JobStatus.COMPLETING:
            # Someone looking at a finished job wants its outputs: ahead of the fetch queue.
            self.action_collect_output()
        elif row is not None and row.status.is_final and self.monitor.auto_tail:
            self.action_tail_output()

    def refresh_from_store(self) -> None:
        """Redraw from the store (called by the app on new events).

        A repaint can land between ``push_screen`` and the screen's compose; a screen not yet
        mounted has nothing to redraw, and its own mount shows the job as it then is.
        """
        if not self.is_mounted:
            return
        self.query_one(JobDetail).refresh_from_store()

    def action_collect_output(self) -> None:
        self.monitor.request(CollectOutput(job_id=self.job_id), f"collect outputs of job {self.job_id}")

    def action_refresh_job(self) -> None:
        self.monitor.request(RefreshJob(job_id=self.job_id), f"refresh job {self.job_id}")

    @work(group="commands")
    async def action_tail_output(self) -> None:
        detail = self.query_one(JobDetail)
        job_id = self.job_id
        detail.show_output("fetching ...")
        ack = await self.monitor.send_command(TailOutput(job_id=job_id), f"output of job {job_id}", toast=False)
        # The screen is kept between jobs: an answer about the last one is not this one's output.
        if ack is not None and detail.job_id == job_id:
            detail.show_output(ack.message if ack.ok else f"no output: {ack.message}")
