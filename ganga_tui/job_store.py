"""The TUI's view model: jobs as rows, operations, backends, groups and warnings, from bus events.

Plain Python with no Textual import, so it is tested and measured on its own. The bus
worker folds every event in with :meth:`JobStore.apply`; widgets read rows by index
(:meth:`JobStore.get_row_at`) from a filtered, sorted view that is rebuilt only when
something that decides membership or order changed, and at most when a widget asks.
"""

from __future__ import annotations

import itertools
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from dataclasses import replace
from typing import Final, Literal

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
    OpFinished,
    OpKind,
    OpQueued,
    OpRecord,
    OpStarted,
    SessionEnded,
    Snapshot,
    UpdateRejected,
)

from .job_filter import SORT_KEYS, JobFilter, SortKey, sort_value
from .job_rows import GroupStats, JobRow, OpView, Transition, WarningKind

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


_LAG_HISTORY: Final = 60
"""Lag samples kept per backend for its sparkline."""
_FADE_SECONDS: Final = 3.0
"""How long a finished operation stays in the queue view, fading."""
_OP_LOG: Final = 20_000
"""Finished operations remembered for job details."""
_PER_JOB_OPS: Final = 12
_PER_JOB_ERRORS: Final = 12
_DURATION_SAMPLES: Final = 200


class JobStore:
    """Everything the TUI shows, folded from bus events.

    Args:
        unconfirmed_factor: a job is flagged when unconfirmed for this many poll intervals.
        stuck_factor: a job is flagged when in a status this many times its group's usual time.
    """

    def __init__(self, *, unconfirmed_factor: float = 3.0, stuck_factor: float = 4.0) -> None:
        self.unconfirmed_factor = unconfirmed_factor
        self.stuck_factor = stuck_factor
        self.session = ""
        """The session's name, from the last snapshot."""
        self.rows: dict[str, JobRow] = {}
        """Every job, by id."""
        self.counts: Counter[JobStatus] = Counter()
        """Jobs per status."""
        self.by_backend: dict[str, Counter[JobStatus]] = {}
        """Jobs per status of each backend."""
        self.backends: dict[str, BackendRecord] = {}
        """Each backend's latest health sample."""
        self.lag_history: dict[str, deque[float]] = {}
        """Each backend's recent lag samples, oldest first."""
        self.ops: dict[int, OpView] = {}
        """Queued, in-flight and recently finished operations."""
        self.groups: dict[str, GroupStats] = {}
        self.rejections = 0
        self.heartbeat: Heartbeat | None = None
        self.ended: str | None = None
        """Why the session ended, once it has."""
        self.connected = True
        self.acks: deque[CommandAcked] = deque(maxlen=50)
        self.events = 0
        """Events folded in."""
        self.history: dict[str, list[Transition]] = {}
        self.errors: dict[str, deque[str]] = {}
        self.ops_of: dict[str, deque[int]] = {}
        self.op_log: OrderedDict[int, OpView] = OrderedDict()
        self.warned: dict[str, JobRow] = {}
        """Jobs with at least one warning."""
        self.new_failures: list[str] = []
        """Jobs that failed since the last :meth:`take_news` call."""
        self.new_group_completions: list[str] = []
        """Groups whose last job became final since the last :meth:`take_news` call."""
        self._live: set[str] = set()
        self._finished_all: deque[float] = deque(maxlen=20_000)
        self._scan_queue: list[str] = []
        self._order = 0
        self._filter = JobFilter()
        self._sort: SortKey = "id"
        self._reverse = False
        self._view: list[JobRow] = []
        self._view_dirty = True
        self._index: dict[str, int] | None = None
        self.jobs_generation = 0
        """Bumped whenever a row or the view changes; widgets repaint when it moves."""
        self.ops_generation = 0
        self.backends_generation = 0

    # -- folding events ------------------------------------------------------------------------

    def apply_many(self, events: Iterable[Event | ConnectionChanged]) -> None:
        """Fold several events in, in order."""
        for event in events:
            self.apply(event)

    def apply(self, event: Event | ConnectionChanged) -> None:
        """Fold one event in. A snapshot replaces the state, keeping the jobs' histories."""
        self.events += 1
        if isinstance(event, JobChanged):
            self._on_job_changed(event)
        elif isinstance(event, OpQueued):
            self._on_op_queued(event.op, event.at)
        elif isinstance(event, OpStarted):
            self._on_op_started(event)
        elif isinstance(event, OpFinished):
            self._on_op_finished(event)
        elif isinstance(event, JobAdded):
            self._add(event.job, event.at)
        elif isinstance(event, LagSampled):
            self._on_backend(event.backend)
        elif isinstance(event, Snapshot):
            self._on_snapshot(event)
        elif isinstance(event, UpdateRejected):
            self.rejections += 1
            if event.job_id is not None and event.job_id in self.rows:
                self._error(event.job_id, f"{event.category}: {event.reason}", event.at)
        elif isinstance(event, BreakerChanged):
            record = self.backends.get(event.backend)
            if record is not None:
                self.backends[event.backend] = _with_breaker(record, event.state)
                self.backends_generation += 1
        elif isinstance(event, Heartbeat):
            self.heartbeat = event
        elif isinstance(event, CommandAcked):
            self.acks.append(event)
        elif isinstance(event, SessionEnded):
            self.ended = event.reason or "ended"
            self.backends_generation += 1
        elif isinstance(event, ConnectionChanged):
            self.connected = event.connected
            self.backends_generation += 1

    def _on_snapshot(self, snapshot: Snapshot) -> None:
        self.session = snapshot.session
        self.rows.clear()
        self.counts.clear()
        self.groups.clear()
        self.by_backend.clear()
        self._live.clear()
        self.warned.clear()
        self._order = 0
        for job in snapshot.jobs:
            self._add(job, snapshot.at, remember=job.job_id not in self.history)
        self.ops = {}
        for op in snapshot.ops:
            self._on_op_queued(op, snapshot.at)
        for backend in snapshot.backends:
            self._on_backend(backend)
        self.rejections = snapshot.counters.get("rejections", self.rejections)
        self.ended = None
        self._view_dirty = True
        self.jobs_generation += 1

    def _add(self, record: JobRecord, at: float, *, remember: bool = True) -> None:
        existing = self.rows.get(record.job_id)
        if existing is not None:
            self._count(existing, -1)
        row = JobRow(
            job_id=record.job_id,
            backend=record.backend,
            status=record.status,
            name=record.name,
            group=record.group,
            status_since=record.status_since,
            last_confirmed=record.last_confirmed,
            next_poll_at=record.next_poll_at,
            exit_code=record.exit_code,
            info=record.info,
            order=existing.order if existing is not None else self._order,
            version=existing.version + 1 if existing is not None else 0,
        )
        if existing is None:
            self._order += 1
        self.rows[row.job_id] = row
        self._count(row, +1)
        if remember:
            self.history.setdefault(row.job_id, []).append(
                Transition(at=record.status_since or at, old=None, new=row.status, source="added", info=row.info)
            )
        self._view_dirty = True
        self.jobs_generation += 1

    def _count(self, row: JobRow, delta: int) -> None:
        self.counts[row.status] += delta
        group = self.groups.get(row.group)
        if group is None:
            group = self.groups[row.group] = GroupStats(row.group)
        group.counts[row.status] += delta
        backend = self.by_backend.get(row.backend)
        if backend is None:
            backend = self.by_backend[row.backend] = Counter()
        backend[row.status] += delta
        if delta > 0 and not row.status.is_final:
            self._live.add(row.job_id)
        elif row.status.is_final or delta < 0:
            self._live.discard(row.job_id)

    def _on_job_changed(self, event: JobChanged) -> None:
        row = self.rows.get(event.job_id)
        if row is None:
            return  # the snapshot after a resync will carry it
        group = self.groups[row.group]
        if row.status_since:
            samples = group.durations.get(row.status)
            if samples is None:
                samples = group.durations[row.status] = deque(maxlen=_DURATION_SAMPLES)
            samples.append(max(0.0, event.at - row.status_since))
        was_final = row.status.is_final
        self._count(row, -1)
        row.status = event.new
        row.status_since = event.at
        row.last_confirmed = event.at
        row.info = event.info
        if event.exit_code is not None:
            row.exit_code = event.exit_code
        if not event.new.is_active:
            row.next_poll_at = None
        row.version += 1
        self._count(row, +1)
        self.history.setdefault(row.job_id, []).append(
            Transition(at=event.at, old=event.old, new=event.new, source=event.source, info=event.info)
        )
        if event.op_id is not None:
            self._touch(row.job_id, event.op_id)
        if event.new.is_final and not was_final:
            group.finished_at.append(event.at)
            self._finished_all.append(event.at)
            if event.new == JobStatus.FAILED:
                self.new_failures.append(row.job_id)
            if group.final == group.total:
                self.new_group_completions.append(group.name)
        if row.warnings:
            self._set_warnings(row, frozenset())
        if self._filter.active or self._sort in ("status", "updated", "next_poll"):
            self._view_dirty = True
        self.jobs_generation += 1

    def _touch(self, job_id: str, op_id: int) -> None:
        ops = self.ops_of.get(job_id)
        if ops is None:
            ops = self.ops_of[job_id] = deque(maxlen=_PER_JOB_OPS)
        if op_id not in ops:
            ops.append(op_id)

    def _error(self, job_id: str, text: str, at: float) -> None:
        errors = self.errors.get(job_id)
        if errors is None:
            errors = self.errors[job_id] = deque(maxlen=_PER_JOB_ERRORS)
        errors.append(f"{at:.3f} {text}")

    def _on_op_queued(self, record: OpRecord, at: float) -> None:
        view = self.ops.get(record.op_id)
        if view is None:
            view = OpView(
                op_id=record.op_id,
                kind=record.kind,
                backend=record.backend,
                job_ids=record.job_ids,
                enqueued_at=record.enqueued_at,
                attempt=record.attempt,
                started_at=record.started_at,
                state=str(record.state),
            )
            self.ops[record.op_id] = view
            self._remember_op(view)
            for job_id in record.job_ids:
                self._touch(job_id, record.op_id)
        else:
            view.state = "queued"
            view.attempt = record.attempt
            view.finished_at = None
            view.version += 1
        self.ops_generation += 1

    def _remember_op(self, view: OpView) -> None:
        self.op_log[view.op_id] = view
        while len(self.op_log) > _OP_LOG:
            self.op_log.popitem(last=False)

    def _on_op_started(self, event: OpStarted) -> None:
        view = self.ops.get(event.op_id)
        if view is None:
            return
        view.state = "in_flight"
        view.started_at = event.at
        view.attempt = event.attempt
        view.version += 1
        if view.kind == OpKind.POLL:
            for job_id in view.job_ids:
                row = self.rows.get(job_id)
                if row is not None:
                    row.polling = True
                    row.version += 1
            self.jobs_generation += 1
        self.ops_generation += 1

    def _on_op_finished(self, event: OpFinished) -> None:
        view = self.ops.get(event.op_id)
        if view is None:
            return
        view.latency = event.latency
        view.error = event.error
        view.changed = event.changed
        view.version += 1
        if event.retry_in is not None:
            view.state = "retrying"
        else:
            view.state = "done" if event.outcome == "done" else event.outcome
            view.finished_at = event.at
        if view.kind == OpKind.POLL:
            interval = self._interval(view.backend)
            for job_id in view.job_ids:
                row = self.rows.get(job_id)
                if row is None:
                    continue
                row.polling = False
                if event.outcome == "done":
                    row.last_confirmed = max(row.last_confirmed, event.at)
                    if row.status.is_active:
                        row.next_poll_at = event.at + interval if interval else None
                    if row.warnings:
                        self._set_warnings(row, row.warnings - {WarningKind.UNCONFIRMED})
                row.version += 1
            if self._sort in ("updated", "next_poll"):
                self._view_dirty = True
            self.jobs_generation += 1
        if event.error:
            for job_id in view.job_ids:
                if job_id in self.rows:
                    self._error(job_id, f"{view.kind} op {view.op_id} {event.outcome}: {event.error}", event.at)
        self.ops_generation += 1

    def _interval(self, backend: str) -> float:
        record = self.backends.get(backend)
        return record.poll_interval if record is not None else 0.0

    def _on_backend(self, record: BackendRecord) -> None:
        self.backends[record.name] = record
        history = self.lag_history.get(record.name)
        if history is None:
            history = self.lag_history[record.name] = deque(maxlen=_LAG_HISTORY)
        history.append(record.lag)
        self.backends_generation += 1

    # -- time-driven upkeep --------------------------------------------------------------------

    def expire_ops(self, now: float) -> bool:
        """Forget operations that finished more than the fade time ago; True if any went."""
        gone = [op_id for op_id, view in self.ops.items() if view.finished_at is not None]
        gone = [op_id for op_id in gone if now - (self.ops[op_id].finished_at or now) > _FADE_SECONDS]
        for op_id in gone:
            del self.ops[op_id]
        if gone:
            self.ops_generation += 1
        return bool(gone)

    def fade(self, view: OpView, now: float) -> float:
        """How far a finished operation has faded, 0 (just finished) to 1 (about to go)."""
        if view.finished_at is None:
            return 0.0
        return min(1.0, max(0.0, (now - view.finished_at) / _FADE_SECONDS))

    def scan_warnings(self, now: float, *, budget: int | None = None) -> int:
        """Recheck the warnings of jobs that are not final; returns how many jobs have any.

        Args:
            now: wall-clock time.
            budget: check at most this many jobs, carrying on where the last call stopped
                (so a tick never stalls on 100k jobs); ``None`` checks all of them.
        """
        if budget is None or not self._scan_queue:
            self._scan_queue = list(self._live)
        take = len(self._scan_queue) if budget is None else min(budget, len(self._scan_queue))
        batch = self._scan_queue[len(self._scan_queue) - take :]
        del self._scan_queue[len(self._scan_queue) - take :]
        for job_id in batch:
            row = self.rows.get(job_id)
            if row is None or row.status.is_final:
                continue
            found: set[WarningKind] = set()
            interval = self._interval(row.backend)
            if interval > 0:
                if row.status.is_active and now - row.last_confirmed > self.unconfirmed_factor * interval:
                    found.add(WarningKind.UNCONFIRMED)
                if row.status == JobStatus.COMPLETING and now - row.status_since > self.unconfirmed_factor * interval:
                    found.add(WarningKind.BACKEND_DONE)
            usual = self.groups[row.group].usual_time(row.status)
            if usual is not None and now - row.status_since > max(self.stuck_factor * usual, usual + 10.0):
                found.add(WarningKind.STUCK)
            if found != row.warnings:
                self._set_warnings(row, frozenset(found))
        return len(self.warned)

    def _set_warnings(self, row: JobRow, warnings: frozenset[WarningKind]) -> None:
        row.warnings = warnings
        row.version += 1
        if warnings:
            self.warned[row.job_id] = row
        else:
            self.warned.pop(row.job_id, None)
        if self._filter.warnings_only or self._sort == "warnings":
            self._view_dirty = True
        self.jobs_generation += 1

    def take_news(self) -> tuple[list[str], list[str]]:
        """Failures and finished groups since the last call (for notifications)."""
        news = (self.new_failures, self.new_group_completions)
        self.new_failures, self.new_group_completions = [], []
        return news

    # -- the table's view ----------------------------------------------------------------------

    @property
    def filter(self) -> JobFilter:
        """The table's current filter."""
        return self._filter

    def set_filter(self, job_filter: JobFilter) -> None:
        """Show only the jobs ``job_filter`` matches."""
        if job_filter != self._filter:
            self._filter = job_filter
            self._view_dirty = True
            self.jobs_generation += 1

    @property
    def sort_key(self) -> SortKey:
        """The column the table is sorted by."""
        return self._sort

    @property
    def sort_reverse(self) -> bool:
        """Whether the sort is descending."""
        return self._reverse

    def sort(self, key: SortKey, *, reverse: bool = False) -> None:
        """Order the table by ``key``."""
        if (key, reverse) != (self._sort, self._reverse):
            self._sort, self._reverse = key, reverse
            self._view_dirty = True
            self.jobs_generation += 1

    @property
    def view_dirty(self) -> bool:
        """The view's membership or order may be stale."""
        return self._view_dirty

    def refresh_view(self) -> bool:
        """Rebuild the filtered, sorted view if it may be stale; True when it was rebuilt."""
        if not self._view_dirty:
            return False
        job_filter = self._filter
        rows: Iterable[JobRow] = self.rows.values()
        if job_filter.active:
            rows = [row for row in rows if job_filter.matches(row)]
        view = list(rows)
        key = self._sort
        if key != "id" or self._reverse or not _ids_ascending(view):
            view.sort(key=lambda row: sort_value(row, key), reverse=self._reverse)
        self._view = view
        self._index = None
        self._view_dirty = False
        return True

    @property
    def row_count(self) -> int:
        """Rows in the view (call :meth:`refresh_view` first for an up-to-date count)."""
        return len(self._view)

    def get_row_at(self, index: int) -> JobRow:
        """The row at ``index`` of the view.

        Raises:
            IndexError: no such row.
        """
        return self._view[index]

    def index_of(self, job_id: str) -> int | None:
        """Where a job sits in the view, or ``None`` when filtered out."""
        if self._index is None:
            self._index = {row.job_id: index for index, row in enumerate(self._view)}
        return self._index.get(job_id)

    # -- reading -------------------------------------------------------------------------------

    def live_ops(self) -> list[OpView]:
        """Operations for the queue view: oldest first."""
        return sorted(self.ops.values(), key=lambda view: (view.enqueued_at, view.op_id))

    def is_lagging(self, backend: str) -> bool:
        """Whether a backend's lag is beyond its target (one poll interval overdue)."""
        record = self.backends.get(backend)
        return record is not None and record.poll_interval > 0 and record.lag > record.poll_interval

    @property
    def total(self) -> int:
        """Jobs known."""
        return len(self.rows)

    @property
    def final(self) -> int:
        """Jobs in a final status."""
        return sum(n for status, n in self.counts.items() if status.is_final)

    def overall(self) -> GroupStats:
        """Progress over every job, as one group."""
        return GroupStats("all", counts=self.counts, finished_at=self._finished_all)


def _with_breaker(record: BackendRecord, state: Literal["closed", "open", "half_open"]) -> BackendRecord:
    return replace(record, breaker=state)


def _ids_ascending(view: list[JobRow]) -> bool:
    # Jobs usually arrive in id order, so the common case skips a sort of every row.
    keys = [row.id_key for row in view]
    return all(a <= b for a, b in itertools.pairwise(keys))
