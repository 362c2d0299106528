"""Warnings over the one fold: jobs that need a person's look, and only those.

A job waiting its turn within the session's plan is not a warning: an active job whose
published next poll (``Rescheduled``) is still ahead, or a finished job whose outputs wait
in a fetch queue that the service's allowance will clear in time (the backend's
``collect_bound``, at its longest since the queue was last empty), is on schedule however long
ago it was last confirmed.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Final

from monitor_core import JobStatus, StateFold

from ..job_rows import NO_WARNINGS, JobRow, WarningKind, warning_set
from .backends import BackendsView
from .groups import GroupsView
from .jobs import JobsView

__all__ = ["WarningsView"]

_STUCK_MARGIN: Final = 10.0
_NOT_STUCK: Final = frozenset({JobStatus.COMPLETING, JobStatus.SUBMITTED})
"""Statuses whose time is not judged against the group's: output waits have a plan, queue waits no bound."""


_COLLECT_FAILED: Final = warning_set((WarningKind.COLLECT_FAILED,))


class WarningsView:
    """Which jobs carry which warnings, rechecked a budget of jobs at a time.

    Args:
        unconfirmed_factor: a job is flagged when unconfirmed for this many poll intervals past its plan.
        stuck_factor: a job is flagged when in a status this many times its group's usual time.
    """

    def __init__(
        self,
        fold: StateFold,
        jobs: JobsView,
        groups: GroupsView,
        backends: BackendsView,
        *,
        unconfirmed_factor: float,
        stuck_factor: float,
    ) -> None:
        self._fold = fold
        self._jobs = jobs
        self._groups = groups
        self._backends = backends
        self.unconfirmed_factor = unconfirmed_factor
        self.stuck_factor = stuck_factor
        self.warned: dict[str, JobRow] = {}
        """Jobs with at least one warning."""
        self._scan_queue: list[str] = []

    def reset(self) -> None:
        self.warned = {job_id: row for job_id, row in self.warned.items() if self._jobs.rows.get(job_id) is row}
        self._scan_queue = []

    def refreshed(self, row: JobRow) -> None:
        """A job's row changed: a fresh status clears time-based warnings; a failed collection is one."""
        wanted = _COLLECT_FAILED if row.collect_error else NO_WARNINGS
        if row.warnings != wanted:
            self.set(row, wanted)

    def confirmed(self, row: JobRow) -> None:
        """A poll confirmed the job's status."""
        if WarningKind.UNCONFIRMED in row.warnings:
            self.set(row, row.warnings - {WarningKind.UNCONFIRMED})

    def scan(self, now: float, *, budget: int | None = None, resume: bool = False) -> int:
        """Recheck the warnings of jobs that are not final; returns how many jobs have any.

        Args:
            now: wall-clock time.
            budget: check at most this many jobs, carrying on where the last call stopped
                (so a tick never stalls on 100k jobs); ``None`` checks all of them.
            resume: only carry on with the pass under way; once it is done, the next call
                without ``resume`` starts another. A tick's later slices resume: each one
                starting a pass over every row when the last had ended (with every job final,
                each time) cost a tick ten walks of all the rows, 10 ms each at 100,000 jobs.
        """
        rows = self._jobs.rows
        if not self._scan_queue and resume and budget is not None:
            return len(self.warned)
        if budget is None or not self._scan_queue:
            self._scan_queue = [job_id for job_id, row in rows.items() if not row.status.is_final]
        take = len(self._scan_queue) if budget is None else min(budget, len(self._scan_queue))
        batch = self._scan_queue[len(self._scan_queue) - take :]
        del self._scan_queue[len(self._scan_queue) - take :]
        backends = self._fold.backends
        # A usual time per group and state, not per job: each is a sort of the group's samples.
        usual_times: dict[tuple[str, JobStatus], float | None] = {}
        for job_id in batch:
            row = rows.get(job_id)
            if row is None or row.status.is_final:
                continue
            found: set[WarningKind] = set()
            in_status = now - row.status_since
            record = backends.get(row.backend)
            interval = record.poll_interval if record is not None else 0.0
            if interval > 0:
                allowed = self.unconfirmed_factor * interval
                if row.status.is_active and now - row.last_confirmed > allowed:
                    planned = row.next_poll_at
                    # Waiting its turn: the session said when it polls next, and that is not long past.
                    if planned is None or now > planned + allowed:
                        found.add(WarningKind.UNCONFIRMED)
                completing = row.status == JobStatus.COMPLETING
                if completing and in_status > allowed + self._backends.collect_plan(row.backend):
                    found.add(WarningKind.BACKEND_DONE)
            # Waiting for outputs is judged against the fetch plan above, not against how long the
            # group's first outputs took: those were fetched first because their group was nearly done.
            # Waiting in a site's queue is the grid's doing, not the job's: its waits spread so wide
            # (exponentially at the least) that any multiple of the usual flags the unlucky, about
            # one job in a thousand of a fault-free 100,000-job run.
            if row.status not in _NOT_STUCK:
                key = (row.group, row.status)
                if key in usual_times:
                    usual = usual_times[key]
                else:
                    usual = usual_times[key] = self._groups.group(row.group).usual_time(row.status)
                if usual is not None and in_status > max(self.stuck_factor * usual, usual + _STUCK_MARGIN):
                    found.add(WarningKind.STUCK)
            if row.collect_error:
                found.add(WarningKind.COLLECT_FAILED)
            if found != row.warnings:
                self.set(row, found)
        return len(self.warned)

    def set(self, row: JobRow, warnings: AbstractSet[WarningKind]) -> None:
        row.warnings = warnings = warning_set(warnings)
        if warnings:
            self.warned[row.job_id] = row
        else:
            self.warned.pop(row.job_id, None)
        self._jobs.touch(row)
