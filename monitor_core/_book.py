"""The book of jobs: every job of a session, Ganga's state machine over them, and what follows a change.

The book is the one place a job's status changes. It believes a backend's report only if
Ganga's state graph allows the move, counts and publishes what it refuses, keeps the
counters, the running-time statistics of each group and the bookkeeping of collected
outputs. It never calls a backend and never waits (except to write a collected output
to the store before the job is settled): :meth:`JobBook.apply` returns the *effects* of a
change (start or stop polling the job, fetch its outputs) for the job's lane to carry out,
so the whole state machine is testable without an event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

from ._clock import Clock
from ._events import ChangeSource, Event, JobChanged, RejectionCategory, UpdateRejected
from ._model import ACTIVE_STATUSES, FINAL_STATUSES, Job, JobStatus, is_legal_transition
from ._policy import GroupRuntimes
from ._store import SessionStore
from .backends._base import StatusReport

__all__ = ["Activate", "Deactivate", "Effect", "Fetch", "JobBook", "NotCollectable"]

log = logging.getLogger(__name__)

_BACKEND_FINAL: Final = frozenset({JobStatus.COMPLETED, JobStatus.FAILED})
"""Finished at the backend: the job goes through ``completing`` while its output is fetched."""


@dataclass(frozen=True, slots=True)
class Activate:
    """Start polling the job: due one interval from now, or at once when ``now`` is set."""

    job: Job
    now: bool = False


@dataclass(frozen=True, slots=True)
class Deactivate:
    """Stop polling the job."""

    job_id: str


@dataclass(frozen=True, slots=True)
class Fetch:
    """Collect the job's outputs; ``urgent`` when a user asked for them."""

    job: Job
    urgent: bool = False


Effect: TypeAlias = Activate | Deactivate | Fetch
_NOTHING: Final[tuple[Effect, ...]] = ()


class NotCollectable(ValueError):
    """A request to collect a job's outputs that cannot be carried out (with the reason)."""


class JobBook:
    """Every job of a session and the rules for changing them.

    Args:
        publish: where job events go.
        clock: the scheduler's clock (events carry its wall-clock times).
        store: the session's store (changed jobs are marked for its next flush), or ``None``.
    """

    def __init__(self, *, publish: Callable[[Event], None], clock: Clock, store: SessionStore | None = None) -> None:
        self._publish = publish
        self._clock = clock
        self.store = store
        self.jobs: dict[str, Job] = {}
        """Every job of the session, by id."""
        self.by_backend_id: dict[str, dict[str, str]] = {}
        """Per backend: the backend's id of a job -> the job's id."""
        self._fetches_output: dict[str, bool] = {}
        self.counters: Counter[str] = Counter()
        self.outputs_collected: dict[str, tuple[str, ...]] = {}
        """Job id -> its collected output files."""
        self.groups: dict[str, GroupRuntimes] = {}
        """Running-time statistics per job group, for the adaptive poll policy."""
        self.open_in_group: Counter[str] = Counter()
        """Jobs of each group that are not final yet (fetches go first to groups closest to complete)."""
        self.by_status: Counter[JobStatus] = Counter()
        """Jobs per status, kept as they move: a heartbeat carries it without a walk over every job."""
        self.final_count = 0
        self.transitions = 0
        """Status changes so far (a lane subtracts two readings to count what one answer changed)."""
        self.all_final = asyncio.Event()
        self.all_final.set()
        self._next_number = 1

    # -- backends and jobs in ------------------------------------------------------------------

    def add_backend(self, name: str, *, fetches_output: bool) -> None:
        """Know a backend's jobs; ``fetches_output`` says whether a finished job's outputs are fetched."""
        self.by_backend_id.setdefault(name, {})
        self._fetches_output[name] = fetches_output

    def new_id(self) -> str:
        """The next free job id."""
        job_id = str(self._next_number)
        self._next_number += 1
        return job_id

    def find(self, backend: str, backend_id: str) -> Job | None:
        """The job a backend knows by ``backend_id``, if tracked."""
        job_id = self.by_backend_id[backend].get(backend_id)
        return None if job_id is None else self.jobs[job_id]

    def add(self, job: Job, *, restored: bool = False) -> tuple[Effect, ...]:
        """Start keeping a job; return what its lane must do for it.

        Raises:
            KeyError: the job's backend is unknown to the book.
            ValueError: the id is taken.
        """
        # Written for speed: a resumed session adds 100,000 jobs in one go.
        job_id, backend, status, jobs = job.job_id, job.backend, job.status, self.jobs
        ids = self.by_backend_id[backend]
        if job_id in jobs:
            raise ValueError(f"job id {job_id} is already tracked")
        if job_id.isdigit() and (number := int(job_id)) >= self._next_number:
            self._next_number = number + 1
        jobs[job_id] = job
        self.by_status[status] += 1
        self.all_final.clear()
        if job.backend_id is not None:
            ids[job.backend_id] = job_id
        if status in FINAL_STATUSES:
            if (
                restored
                and status == JobStatus.FAILED
                and self._fetches_output[backend]
                and job.outcome is not None
                and job_id not in self.outputs_collected
            ):
                # Failed to collect in an earlier session: still retryable by hand.
                job.collect_error = job.collect_error or job.info or "outputs not collected"
            self._count_final()
            return _NOTHING
        self.open_in_group[job.group] += 1
        if status in ACTIVE_STATUSES:
            return (Activate(job, restored),)
        if status == JobStatus.COMPLETING and self._fetches_output[backend]:
            return (Fetch(job),)
        return _NOTHING

    # -- what backends say ---------------------------------------------------------------------

    def reject(self, backend: str, job_id: str | None, category: RejectionCategory, reason: str) -> None:
        """Count, log and publish a refused piece of a backend's answer."""
        self.counters["rejections"] += 1
        self.counters[f"rejections.{category}"] += 1
        log.warning("%s: rejected (%s) for job %s: %s", backend, category, job_id, reason)
        self._publish(
            UpdateRejected(at=self._clock.wall_now(), backend=backend, job_id=job_id, category=category, reason=reason)
        )

    def apply(
        self, job: Job, report: StatusReport, source: ChangeSource, op_id: int | None, now: float
    ) -> tuple[Effect, ...]:
        """Believe a backend's report if Ganga's state machine allows it.

        Args:
            job: the job the report is about.
            report: what the backend said.
            source: how the report arrived.
            op_id: the operation that brought it, if any.
            now: wall-clock time of the report.

        Returns:
            What the job's lane must do because of the change (nothing when it did not change).
        """
        job.last_confirmed = now
        new = report.status
        fetches = self._fetches_output[job.backend]
        if fetches and new in _BACKEND_FINAL:
            if job.status == JobStatus.COMPLETING:
                return _NOTHING  # already known; the output fetch settles it
            target = JobStatus.COMPLETING
        else:
            target = new
        if target == job.status:
            if report.info:
                job.info = report.info
            return _NOTHING
        if not is_legal_transition(job.status, target):
            self.reject(
                job.backend, job.job_id, "illegal_transition", f"{job.status} -> {new} ({report.info or 'no detail'})"
            )
            return _NOTHING
        if new in _BACKEND_FINAL:
            job.outcome = new
        if report.exit_code is not None:
            job.exit_code = report.exit_code
        job.info = report.info
        return self._move(job, target, source, op_id, now)

    def _move(
        self, job: Job, new: JobStatus, source: ChangeSource, op_id: int | None, now: float
    ) -> tuple[Effect, ...]:
        old = job.status
        if old == JobStatus.RUNNING:
            runtimes = self.groups.get(job.group)
            if runtimes is None:
                runtimes = self.groups[job.group] = GroupRuntimes()
            runtimes.add(now - job.status_since)
        job.status, job.status_since = new, now
        by_status = self.by_status
        by_status[old] -= 1
        by_status[new] += 1
        effects: tuple[Effect, ...] = _NOTHING
        if new.is_active:
            if not old.is_active:
                effects = (Activate(job),)
        elif old.is_active:
            effects = (Deactivate(job.job_id),)
        if new == JobStatus.COMPLETING and self._fetches_output[job.backend]:
            effects = (*effects, Fetch(job))
        if new.is_final and not old.is_final:
            self.open_in_group[job.group] -= 1
            self._count_final()
        elif old.is_final and not new.is_final:
            # Resubmitted (Ganga allows failed -> submitting): final no more.
            self.open_in_group[job.group] += 1
            self.final_count -= 1
            self.all_final.clear()
        self.counters["transitions"] += 1
        self.transitions += 1
        if self.store is not None:
            self.store.mark_dirty(job)
        self._publish(
            JobChanged(
                at=now,
                job_id=job.job_id,
                backend=job.backend,
                old=old,
                new=new,
                source=source,
                info=job.info,
                exit_code=job.exit_code,
                op_id=op_id,
                collect_error=job.collect_error,
            )
        )
        return effects

    def _count_final(self) -> None:
        self.final_count += 1
        if self.final_count >= len(self.jobs):
            self.all_final.set()

    # -- outputs -------------------------------------------------------------------------------

    def collect_request(self, job_id: str) -> Fetch:
        """A user's request to collect a job's outputs now (also a retry of a failed collection).

        Raises:
            KeyError: no such job.
            NotCollectable: the job has no outputs to collect (not finished, already collected, or
                its backend keeps the outputs itself).
        """
        job = self.jobs[job_id]
        if not self._fetches_output[job.backend]:
            raise NotCollectable(f"job {job_id}'s backend keeps its outputs itself")
        if job_id in self.outputs_collected:
            raise NotCollectable(f"job {job_id}'s outputs are already collected")
        if job.status == JobStatus.COMPLETING or job.collect_error is not None:
            return Fetch(job, urgent=True)
        raise NotCollectable(f"job {job_id} is {job.status}; only finished jobs have outputs to collect")

    async def output_collected(self, job: Job, files: tuple[str, ...], op_id: int | None) -> None:
        """A job's outputs are in place: write it down, then settle the job (exactly once)."""
        if job.job_id not in self.outputs_collected:
            self.outputs_collected[job.job_id] = files
            self.counters["outputs_collected"] += 1
            if self.store is not None:
                await self.store.record_output(job.job_id, files)
        now = self._clock.wall_now()
        if job.status == JobStatus.COMPLETING:
            self._move(job, job.outcome or JobStatus.COMPLETED, "fetch", op_id, now)
        elif job.collect_error is not None:
            # A manual retry of a failed collection succeeded.
            job.collect_error = None
            self.counters["outputs_failed"] -= 1
            if job.status == JobStatus.FAILED and job.outcome == JobStatus.COMPLETED:
                job.info = "outputs collected on retry"
                self._move(job, JobStatus.COMPLETED, "fetch", op_id, now)
            else:
                # No move in Ganga's graph, but viewers must see the error cleared.
                if self.store is not None:
                    self.store.mark_dirty(job)
                self._publish(
                    JobChanged(
                        at=now,
                        job_id=job.job_id,
                        backend=job.backend,
                        old=job.status,
                        new=job.status,
                        source="fetch",
                        info=job.info,
                        exit_code=job.exit_code,
                        op_id=op_id,
                    )
                )

    def collection_failed(self, job: Job, reason: str, op_id: int | None, *, gone: bool = False) -> None:
        """Every attempt at a job's outputs failed: ``completing -> failed`` with the reason, kept for a retry.

        ``gone`` says the backend will never have them (counted apart from failed attempts).
        """
        if gone:
            self.counters["outputs_lost"] += 1
        if job.collect_error is None:
            self.counters["outputs_failed"] += 1
        job.collect_error = reason
        job.info = f"outputs not collected: {reason}"
        if job.status == JobStatus.COMPLETING:
            self._move(job, JobStatus.FAILED, "fetch", op_id, self._clock.wall_now())
