"""The TUI's model: the one fold of the event stream, and the views the widgets read over it.

Plain Python with no Textual import, so it is tested and measured on its own. The fold
(:class:`~monitor_core.StateFold`) says what is; each view adds only what a person needs to
see of it and is small enough to test alone:

- :class:`~ganga_tui.views.jobs.JobsView`: rows, history, the filtered and sorted table;
- :class:`~ganga_tui.views.ops.OpsView`: the operation queue, its log, each job's errors;
- :class:`~ganga_tui.views.backends.BackendsView`: lag and results-lag history;
- :class:`~ganga_tui.views.groups.GroupsView`: progress, rate and ETA, news;
- :class:`~ganga_tui.views.warnings.WarningsView`: jobs that need a look.

:meth:`JobStore.apply_batch` folds a burst of events and refreshes each touched job's row
once, however many events named it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import assert_never

from monitor_core import (
    BackendRecord,
    BreakerChanged,
    CommandAcked,
    ConnectionChanged,
    Event,
    Heartbeat,
    JobAdded,
    JobChanged,
    JobRecord,
    JobStatus,
    LagSampled,
    LocalFault,
    OpFinished,
    OpKind,
    OpQueued,
    OpStarted,
    Rescheduled,
    SessionEnded,
    Snapshot,
    StateFold,
    UpdateRejected,
)

from .job_filter import SORT_KEYS, JobFilter, SortKey
from .job_rows import GroupStats, JobRow, OpView, Transition, WarningKind
from .views.backends import BackendsView
from .views.groups import GroupsView
from .views.jobs import JobsView
from .views.ops import OpsView
from .views.warnings import WarningsView

__all__ = [
    "SORT_KEYS",
    "GroupStats",
    "JobFilter",
    "JobRow",
    "JobStore",
    "OpView",
    "SortKey",
    "Transition",
    "WarningKind",
]


class JobStore:
    """Everything the TUI shows: the fold, and the views over it.

    Args:
        unconfirmed_factor: a job is flagged when unconfirmed for this many poll intervals past its plan.
        stuck_factor: a job is flagged when in a status this many times its group's usual time.
    """

    def __init__(self, *, unconfirmed_factor: float = 3.0, stuck_factor: float = 4.0) -> None:
        self.fold = StateFold()
        self.jobs = JobsView()
        self.op_view = OpsView()
        self.backend_view = BackendsView(self.fold)
        self.group_view = GroupsView(self.fold)
        self.warning_view = WarningsView(
            self.fold,
            self.jobs,
            self.group_view,
            self.backend_view,
            unconfirmed_factor=unconfirmed_factor,
            stuck_factor=stuck_factor,
        )
        self.connected = True
        self._changed: set[str] = set()
        """Jobs whose status moved in the current batch."""
        self._touched: set[str] = set()
        """Jobs whose row may show something new in the current batch."""
        self._confirmed: set[str] = set()

    # -- folding events ------------------------------------------------------------------------

    def apply(self, event: Event | ConnectionChanged) -> None:
        """Fold one event in and bring the views up to date."""
        self._fold_one(event)
        self._refresh_rows()

    def apply_batch(self, events: Iterable[Event | ConnectionChanged]) -> None:
        """Fold a burst of events in; each touched job's row is refreshed once, at the end."""
        for event in events:
            self._fold_one(event)
        self._refresh_rows()

    apply_many = apply_batch

    def _fold_one(self, event: Event | ConnectionChanged) -> None:
        if isinstance(event, ConnectionChanged):
            self.connected = event.connected
            self.backend_view.changed()
            return
        fold = self.fold
        if isinstance(event, JobChanged):
            before = fold.jobs.get(event.job_id)
            fold.apply(event)
            self.group_view.changed(event, before)
            self.jobs.changed(event, fold)
            self._changed.add(event.job_id)
            self._touched.add(event.job_id)
            return
        if isinstance(event, OpQueued):
            event = _naming_jobs_as(fold.jobs, event)
        fold.apply(event)
        match event:
            case OpQueued():
                self.op_view.queued(event.op)
            case OpStarted():
                view = self.op_view.started(event)
                if view is not None and view.kind == OpKind.POLL:
                    self.jobs.set_polling(view.job_ids, True)
            case OpFinished():
                view = self.op_view.finished(event)
                if view is not None and view.kind == OpKind.POLL:
                    self.jobs.set_polling(view.job_ids, False)
                    if event.outcome == "done":
                        self._touched.update(view.job_ids)
                        self._confirmed.update(view.job_ids)
            case Rescheduled():
                self._touched.update(event.job_ids)
            case LagSampled():
                self.backend_view.sampled(event.backend)
            case JobAdded():
                self.group_view.added(event.job)
                self.jobs.added(event.job, fold)
                self._changed.add(event.job.job_id)
            case Snapshot():
                self._changed.clear()
                self._touched.clear()
                self._confirmed.clear()
                self.jobs.reset(fold)
                self.group_view.reset()
                self.warning_view.reset()
                self.op_view.reset(event)
                self.backend_view.changed()
                for record in event.backends:
                    self.backend_view.sampled(record)
            case UpdateRejected():
                if event.job_id is not None and event.job_id in fold.jobs:
                    self.op_view.error(event.job_id, f"{event.category}: {event.reason}", event.at)
            case BreakerChanged() | LocalFault() | SessionEnded():
                self.backend_view.changed()
            case Heartbeat() | CommandAcked() | JobChanged():
                pass
            case _:
                assert_never(event)

    def _refresh_rows(self) -> None:
        if not (self._touched or self._changed):
            return
        jobs = self.jobs
        rows = jobs.rows
        jobs.refresh(self._touched | self._changed, self.fold)
        warnings = self.warning_view
        for job_id in self._changed:
            row = rows.get(job_id)
            if row is not None:
                warnings.refreshed(row)
        for job_id in self._confirmed - self._changed:
            row = rows.get(job_id)
            if row is not None and row.warnings:
                warnings.confirmed(row)
        self._changed.clear()
        self._touched.clear()
        self._confirmed.clear()

    # -- time-driven upkeep --------------------------------------------------------------------

    def expire_ops(self, now: float) -> bool:
        """Forget operations that finished more than the fade time ago; True if any went."""
        return self.op_view.expire(now)

    def fade(self, view: OpView, now: float) -> float:
        """How far a finished operation has faded, 0 (just finished) to 1 (about to go)."""
        return self.op_view.fade(view, now)

    def scan_warnings(self, now: float, *, budget: int | None = None, resume: bool = False) -> int:
        """Recheck the warnings of jobs that are not final; returns how many have any (see ``WarningsView.scan``)."""
        return self.warning_view.scan(now, budget=budget, resume=resume)

    def take_news(self) -> tuple[list[str], list[str]]:
        """Failures and finished groups since the last call (for notifications)."""
        return self.group_view.take_news()

    # -- reading: the fold -----------------------------------------------------------------------

    @property
    def session(self) -> str:
        return self.fold.session

    @property
    def counts(self) -> dict[JobStatus, int]:
        """Jobs per status."""
        return self.fold.counts

    @property
    def by_backend(self) -> Mapping[str, Mapping[JobStatus, int]]:
        return self.fold.by_backend

    @property
    def backends(self) -> dict[str, BackendRecord]:
        """Each backend's latest health sample."""
        return self.fold.backends

    @property
    def rejections(self) -> int:
        return self.fold.counters.get("rejections", 0)

    @property
    def heartbeat(self) -> Heartbeat | None:
        return self.fold.heartbeat

    @property
    def ended(self) -> str | None:
        """Why the session ended, once it has."""
        return self.fold.ended

    @property
    def acks(self) -> list[CommandAcked]:
        return list(self.fold.acks)

    def note_ack(self, ack: CommandAcked) -> None:
        """Remember an acknowledgement the viewer got in answer to its own command."""
        self.fold.acks.append(ack)

    @property
    def faults(self) -> list[LocalFault]:
        """Local faults not yet cleared."""
        return list(self.fold.faults.values())

    @property
    def events(self) -> int:
        """Events folded in."""
        return self.fold.events

    @property
    def total(self) -> int:
        return self.fold.total

    @property
    def final(self) -> int:
        return self.fold.final

    # -- reading: the views ----------------------------------------------------------------------

    @property
    def rows(self) -> dict[str, JobRow]:
        return self.jobs.rows

    @property
    def history(self) -> Mapping[str, list[Transition]]:
        return self.jobs.history

    @property
    def ops(self) -> Mapping[int, OpView]:
        return self.op_view.ops

    @property
    def op_log(self) -> Mapping[int, OpView]:
        return self.op_view.op_log

    @property
    def ops_of(self) -> Mapping[str, Iterable[int]]:
        return self.op_view.ops_of

    @property
    def errors(self) -> Mapping[str, Iterable[str]]:
        return self.op_view.errors

    def live_ops(self) -> list[OpView]:
        return self.op_view.live()

    @property
    def lag_history(self) -> Mapping[str, Iterable[float]]:
        return self.backend_view.lag_history

    @property
    def results_history(self) -> Mapping[str, Iterable[float]]:
        return self.backend_view.results_history

    def is_lagging(self, backend: str) -> bool:
        return self.backend_view.is_lagging(backend)

    def collect_bound(self) -> float | None:
        return self.backend_view.collect_bound()

    @property
    def groups(self) -> dict[str, GroupStats]:
        return self.group_view.groups

    def overall(self) -> GroupStats:
        return self.group_view.overall()

    @property
    def warned(self) -> dict[str, JobRow]:
        return self.warning_view.warned

    @property
    def unconfirmed_factor(self) -> float:
        return self.warning_view.unconfirmed_factor

    @property
    def stuck_factor(self) -> float:
        return self.warning_view.stuck_factor

    @property
    def jobs_generation(self) -> int:
        return self.jobs.generation

    @property
    def ops_generation(self) -> int:
        return self.op_view.generation

    @property
    def backends_generation(self) -> int:
        return self.backend_view.generation

    # -- the table's view ----------------------------------------------------------------------

    @property
    def filter(self) -> JobFilter:
        return self.jobs.filter

    def set_filter(self, job_filter: JobFilter) -> None:
        self.jobs.set_filter(job_filter)

    @property
    def sort_key(self) -> SortKey:
        return self.jobs.sort_key

    @property
    def sort_reverse(self) -> bool:
        return self.jobs.sort_reverse

    def sort(self, key: SortKey, *, reverse: bool = False) -> None:
        self.jobs.sort(key, reverse=reverse)

    @property
    def view_dirty(self) -> bool:
        return self.jobs.view_dirty

    def refresh_view(self) -> bool:
        return self.jobs.refresh_view()

    @property
    def row_count(self) -> int:
        return self.jobs.row_count

    def get_row_at(self, index: int) -> JobRow:
        return self.jobs.get_row_at(index)

    def index_of(self, job_id: str) -> int | None:
        return self.jobs.index_of(job_id)


def _naming_jobs_as(jobs: Mapping[str, JobRecord], event: OpQueued) -> OpQueued:
    """The event with its operation naming each known job by the fold's own id string.

    A decoded event spells every id anew: 50 bytes a job for as long as its fetch waits (70,000
    of them at once in a flood), and for good as the key of the job's operations.
    """
    op = event.op
    shared = tuple(record.job_id if (record := jobs.get(job_id)) is not None else job_id for job_id in op.job_ids)
    return replace(event, op=replace(op, job_ids=shared))
