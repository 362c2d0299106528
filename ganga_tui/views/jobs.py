"""The job table's rows over the one fold: each row mirrors its job's record, plus what the table adds.

Rows are refreshed from the fold, never re-derived from events, so the table cannot drift
from what every other consumer sees. A burst of changes to one job refreshes its row once.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Final

from monitor_core import JobChanged, JobRecord, StateFold

from ..job_filter import JobFilter, SortKey, sort_value
from ..job_rows import JobRow, id_key
from .history import Histories

__all__ = ["JobsView"]

_HISTORY: Final = 64
"""Transitions kept per job for its detail view."""
_VOLATILE_SORTS: Final = frozenset({"status", "updated", "next_poll", "warnings"})


class JobsView:
    """Every job as a row, its history, and the filtered, sorted view the table reads by index."""

    def __init__(self) -> None:
        self.rows: dict[str, JobRow] = {}
        self.history = Histories(_HISTORY, _RowHistories(lambda: self.rows))
        self.generation = 0
        """Bumped whenever a row or the view changes; widgets repaint when it moves."""
        self._order = 0
        self._filter = JobFilter()
        self._sort: SortKey = "id"
        self._reverse = False
        self._view: list[JobRow] = []
        self._view_dirty = True
        self._narrowed_from: JobFilter | None = None
        """Set when only the filter changed, to one the new filter narrows: the view is searched, not every row."""
        self._filtered = False
        """The view holds only the rows the filter matches."""
        self._mark = 0
        """The filtered view's number: its rows carry it as their ``view_mark``, to tell whether a changed row
        enters or leaves it. A set of the view's job ids did that, 4 MB at 100,000 jobs, two at once while
        each letter typed into the filter rebuilt it."""
        self._index: dict[str, int] | None = None

    # -- keeping rows current --------------------------------------------------------------------

    def reset(self, fold: StateFold) -> None:
        """Rebuild every row from the fold (after a snapshot); histories and arrival order are kept."""
        old = self.rows
        self.rows = {}
        for job_id in fold.jobs:
            existing = old.get(job_id)
            row = existing if existing is not None else self._new_row(fold.jobs[job_id])
            self.rows[job_id] = row
            self._sync(row, fold)
            if job_id not in self.history:
                record = fold.jobs[job_id]
                self.history.add(job_id, record.status_since or fold.at, None, record.status, "added")
        self._invalidate()
        self.generation += 1

    def added(self, record: JobRecord, fold: StateFold) -> JobRow:
        """A job joined (or was restated)."""
        row = self.rows.get(record.job_id)
        if row is None:
            row = self.rows[record.job_id] = self._new_row(record)
            self.history.add(record.job_id, record.status_since or fold.at, None, record.status, "added")
        self._sync(row, fold)
        self._invalidate()
        self.generation += 1
        return row

    def changed(self, event: JobChanged, fold: StateFold) -> None:
        """Remember a transition for the job's history (its row is refreshed by :meth:`refresh`)."""
        if event.job_id not in self.rows:
            # First heard of through a change (a stream joined mid-way): its row keeps its history.
            self.rows[event.job_id] = self._new_row(fold.jobs[event.job_id])
            self._invalidate()
        self.history.add(event.job_id, event.at, event.old, event.new, event.source, event.info)

    def refresh(self, job_ids: Iterable[str], fold: StateFold) -> list[JobRow]:
        """Bring these jobs' rows up to date with the fold, once each; returns the rows touched."""
        touched = []
        rows = self.rows
        for job_id in job_ids:
            row = rows.get(job_id)
            if row is None:
                record = fold.jobs.get(job_id)
                if record is None:
                    continue
                row = rows[job_id] = self._new_row(record)
                self._invalidate()
            self._sync(row, fold)
            touched.append(row)
        if touched:
            if self._sort in _VOLATILE_SORTS:
                self._invalidate()
            elif self._filter.active:
                self._check_membership(touched)
            self.generation += 1
        return touched

    def _check_membership(self, touched: list[JobRow]) -> None:
        """Changed rows under a filter: the view needs rebuilding only if one enters or leaves it."""
        matches, mark, filtered = self._filter.predicate(), self._mark, self._filtered
        if self._narrowed_from is not None:
            # A narrowing searches the current view, which must then hold every row that now matches.
            if filtered and any(row.view_mark != mark and matches(row) for row in touched):
                self._invalidate()
        elif not self._view_dirty:
            # The rest keep their places (the sort is not by anything that changes).
            self._view_dirty = any(matches(row) != (not filtered or row.view_mark == mark) for row in touched)

    def _invalidate(self) -> None:
        """The view must be rebuilt from every row."""
        self._view_dirty = True
        self._narrowed_from = None

    def set_polling(self, job_ids: Iterable[str], polling: bool) -> None:
        """Mark jobs a status call is asking about right now."""
        rows = self.rows
        for job_id in job_ids:
            row = rows.get(job_id)
            if row is not None and row.polling != polling:
                row.polling = polling
                row.version += 1
        self.generation += 1

    def touch(self, row: JobRow) -> None:
        """A row's look changed outside the fold (its warnings)."""
        row.version += 1
        if self._filter.warnings_only or self._sort == "warnings":
            self._invalidate()
        self.generation += 1

    def _new_row(self, record: JobRecord) -> JobRow:
        self._order += 1
        row = JobRow(record, order=self._order)
        if row.id_number == row.order:
            # Jobs mostly arrive in id order, so their place and their id are the same number:
            # one int object for both, not two (32 bytes a job).
            row.order = row.id_number
        return row

    @staticmethod
    def _sync(row: JobRow, fold: StateFold) -> None:
        # The hot path of a busy stream: the fold's side tables are read here directly.
        job_id = row.record.job_id
        record = row.record = fold.jobs[job_id]
        confirmed = fold.confirmed_at.get(job_id)
        row.last_confirmed = record.last_confirmed if confirmed is None else max(confirmed, record.last_confirmed)
        row.next_poll_at = fold.next_poll.get(job_id, record.next_poll_at) if record.status.is_active else None
        row.version += 1

    # -- the table's view ------------------------------------------------------------------------

    @property
    def filter(self) -> JobFilter:
        return self._filter

    def set_filter(self, job_filter: JobFilter) -> None:
        if job_filter != self._filter:
            # The filter the current view was built with, if it is still good to search.
            base = self._narrowed_from if self._view_dirty else self._filter
            self._narrowed_from = base if base is not None and job_filter.narrows(base) else None
            self._filter = job_filter
            self._view_dirty = True
            self.generation += 1

    @property
    def sort_key(self) -> SortKey:
        return self._sort

    @property
    def sort_reverse(self) -> bool:
        return self._reverse

    def sort(self, key: SortKey, *, reverse: bool = False) -> None:
        if (key, reverse) != (self._sort, self._reverse):
            self._sort, self._reverse = key, reverse
            self._invalidate()
            self.generation += 1

    @property
    def view_dirty(self) -> bool:
        return self._view_dirty

    def refresh_view(self) -> bool:
        """Rebuild the filtered, sorted view if it may be stale; True when it was rebuilt."""
        if not self._view_dirty:
            return False
        job_filter = self._filter
        matches = job_filter.predicate()
        if self._narrowed_from is not None:
            # One more letter typed: the new view is inside the current one, already in order.
            view = [row for row in self._view if matches(row)]
        else:
            rows: Iterable[JobRow] = self.rows.values()
            if job_filter.active:
                rows = [row for row in rows if matches(row)]
            view = list(rows)
            key = self._sort
            if key != "id" or self._reverse or not _ids_ascending(view):
                view.sort(key=lambda row: sort_value(row, key), reverse=self._reverse)
        self._filtered = job_filter.active
        if self._filtered:
            self._mark = mark = self._mark + 1
            for row in view:
                row.view_mark = mark
        self._view = view
        self._index = None
        self._view_dirty = False
        self._narrowed_from = None
        return True

    @property
    def row_count(self) -> int:
        return len(self._view)

    def get_row_at(self, index: int) -> JobRow:
        """The row at ``index`` of the view.

        Raises:
            IndexError: no such row.
        """
        return self._view[index]

    def index_of(self, job_id: str) -> int | None:
        if self._sort == "id" and not self._reverse:
            # The view is in id order: a binary search, not a dict of every row (27 ms at 100,000).
            view = self._view
            at = bisect.bisect_left(view, id_key(job_id), key=_id_key)
            return at if at < len(view) and view[at].job_id == job_id else None
        if self._index is None:
            self._index = {row.job_id: index for index, row in enumerate(self._view)}
        return self._index.get(job_id)


class _RowHistories(MutableMapping[str, bytes]):
    """Each job's packed history, kept in its row: one dict of every job less (3.7 MB at 100,000)."""

    def __init__(self, rows: Callable[[], dict[str, JobRow]]) -> None:
        self._rows = rows

    def __getitem__(self, job_id: str) -> bytes:
        packed = self._rows()[job_id].history
        if not packed:
            raise KeyError(job_id)
        return packed

    def __setitem__(self, job_id: str, packed: bytes) -> None:
        self._rows()[job_id].history = packed

    def __delitem__(self, job_id: str) -> None:
        row = self._rows()[job_id]
        if not row.history:
            raise KeyError(job_id)
        row.history = b""

    def __iter__(self) -> Iterator[str]:
        return (job_id for job_id, row in self._rows().items() if row.history)

    def __len__(self) -> int:
        return sum(1 for row in self._rows().values() if row.history)


def _id_key(row: JobRow) -> tuple[int, str]:
    return row.id_key


def _ids_ascending(view: list[JobRow]) -> bool:
    # Jobs usually arrive in id order, so the common case skips a sort of every row.
    # Numbers first (no key tuple built per row); a text id falls back to the full key.
    for a, b in itertools.pairwise(view):
        if a.id_number < b.id_number:
            continue
        if a.id_number > b.id_number or a.id_key > b.id_key:
            return False
    return True
