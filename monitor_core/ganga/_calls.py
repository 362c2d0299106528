"""Ganga's own monitoring calls, run on the monitor's worker threads (drive mode).

Each call goes through the backend's ``updateMonitoringInformation``, the path Ganga's own
loop takes, so completion, postprocessing and the registry are Ganga's business. Masters are
settled from their subjobs afterwards, and failed subjobs are resubmitted where the job asks
for it. GangaCore is imported inside functions.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._changes import CallContext, StatusChange
from ._hooks import current_call, job_change
from ._registry import raw_job

__all__ = ["BatchJobView", "CallOutcome", "batch_views", "fail_vanished", "update_jobs"]

log = logging.getLogger(__name__)

_MONITORED = ("submitted", "running")
_SETTLING = ("submitting", "submitted", "running", "completing")

_thread_loops = threading.local()


@dataclass(slots=True)
class CallOutcome:
    """What one monitoring call found: each job's present status, and jobs whose update raised."""

    confirmations: list[StatusChange] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @property
    def failed_as_a_whole(self) -> bool:
        """Every job's update raised: the backend itself is failing."""
        return bool(self.errors) and not self.confirmations


def _thread_loop() -> asyncio.AbstractEventLoop:
    # One loop per worker thread, kept: asynchronous file libraries keep a context per loop.
    loop: asyncio.AbstractEventLoop | None = getattr(_thread_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _thread_loops.loop = asyncio.new_event_loop()
    return loop


def _run(update: Any, jobs: list[Any]) -> None:
    if asyncio.iscoroutinefunction(update):
        _thread_loop().run_until_complete(update(jobs))
    else:
        update(jobs)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _update_group(jobs: list[Any], outcome: CallOutcome) -> None:
    """Run the backend's update for jobs of one backend; isolate a job whose update raises."""
    update = type(jobs[0].backend).updateMonitoringInformation
    try:
        _run(update, jobs)
        return
    except Exception as exc:  # noqa: BLE001 - a Ganga backend may raise anything; it is reported, not fatal
        if len(jobs) == 1:
            outcome.errors[str(jobs[0].getFQID("."))] = _describe(exc)
            return
        first_error = exc
    # Ganga's updates stop at the first job that raises; one at a time, the others go on.
    for job in jobs:
        try:
            _run(update, [job])
        except Exception as exc:  # noqa: BLE001 - as above
            outcome.errors[str(job.getFQID("."))] = _describe(exc)
    log.debug("batch update raised (%s); retried one job at a time", _describe(first_error))


def update_jobs(job_ids: Sequence[str], context: CallContext, max_resubmit_fraction: float | None) -> CallOutcome:
    """Update the given jobs through their Ganga backend, on this (worker) thread.

    Changes of the jobs asked for are collected in ``context``; changes of other jobs (their
    masters) are posted by the status hook as usual.

    Args:
        job_ids: Ganga full ids, all of one backend.
        context: the call's context (its ``batch`` are ``job_ids``).
        max_resubmit_fraction: Ganga's ``[PollThread]MaxFracForResubmit``; ``None`` disables auto-resubmit.
    """
    token = current_call.set(context)
    try:
        outcome = CallOutcome()
        jobs: list[Any] = []
        for job_id in job_ids:
            try:
                jobs.append(raw_job(job_id))
            except KeyError:
                outcome.missing.append(job_id)
        masters: dict[int, Any] = {}
        by_master: dict[int, list[Any]] = {}
        simple: list[Any] = []
        for job in jobs:
            if len(job.subjobs):
                masters[id(job)] = job
            elif job.master is not None:
                masters[id(job.master)] = job.master
                by_master.setdefault(id(job.master), []).append(job)
            elif str(job.status) in _MONITORED:
                simple.append(job)
        for subjobs in by_master.values():
            monitored = [job for job in subjobs if str(job.status) in _MONITORED]
            if monitored:
                _update_group(monitored, outcome)
        if simple:
            _update_group(simple, outcome)
        _settle(masters.values(), outcome)
        if max_resubmit_fraction is not None:
            for master in masters.values():
                _resubmit_if_required(master, max_resubmit_fraction)
        _confirm(jobs, outcome)
        return outcome
    finally:
        current_call.reset(token)


def _settle(masters: Iterable[Any], outcome: CallOutcome) -> None:
    """Bring split jobs' own status in line with their subjobs'."""
    for master in masters:
        if str(master.status) in _SETTLING:
            try:
                master.updateMasterJobStatus()
            except Exception as exc:  # noqa: BLE001 - a Ganga backend may raise anything
                outcome.errors[str(master.getFQID("."))] = _describe(exc)


def _confirm(jobs: Iterable[Any], outcome: CallOutcome) -> None:
    for job in jobs:
        job_id = str(job.getFQID("."))
        if job_id not in outcome.errors:
            outcome.confirmations.append(job_change(job, None, "poll"))


@dataclass(frozen=True, slots=True)
class BatchJobView:
    """A batch job as its lane sees it before asking the batch system: plain values only."""

    status: str
    """Ganga's status of the job."""
    batch_id: str
    """The batch system's id of the job (``backend.id``), empty before it was submitted."""
    present: StatusChange
    """The job's present status, the lane's confirmation when nothing changed."""


def batch_views(job_ids: Sequence[str]) -> dict[str, BatchJobView]:
    """Ganga's status and batch id of each job still in the registry (worker thread)."""
    views: dict[str, BatchJobView] = {}
    for job_id in job_ids:
        try:
            job = raw_job(job_id)
        except KeyError:
            continue
        batch_id = getattr(job.backend, "id", "")
        views[job_id] = BatchJobView(str(job.status), str(batch_id or ""), job_change(job, None, "poll"))
    return views


def fail_vanished(job_ids: Sequence[str], context: CallContext, reasons: Mapping[str, str]) -> CallOutcome:
    """Fail jobs that ended in their batch system without leaving an exit code for Ganga (worker thread).

    Ganga's batch backends fail such a job themselves once its heartbeat file has been stale
    for ``[<backend>]timeout`` seconds; this is the same verdict, reached from the batch
    system's own word instead of that wait.
    """
    token = current_call.set(context)
    try:
        outcome = CallOutcome()
        jobs: list[Any] = []
        masters: dict[int, Any] = {}
        for job_id in job_ids:
            try:
                job = raw_job(job_id)
            except KeyError:
                outcome.missing.append(job_id)
                continue
            jobs.append(job)
            try:
                if str(job.status) in _MONITORED:
                    log.warning("Ganga job %s: %s; marking it failed", job_id, reasons.get(job_id, "it vanished"))
                    job._getSessionLock()
                    job.updateStatus("failed")
            except Exception as exc:  # noqa: BLE001 - as above
                outcome.errors[job_id] = _describe(exc)
            if job.master is not None:
                masters[id(job.master)] = job.master
        _settle(masters.values(), outcome)
        _confirm(jobs, outcome)
        return outcome
    finally:
        current_call.reset(token)


def _resubmit_if_required(master: Any, max_fraction: float) -> None:
    """Ganga's auto-resubmit policy for split jobs, which its 8.7.12 monitoring loop no longer applies.

    Failed subjobs are resubmitted when the job asks for it (``do_auto_resubmit``), fewer than
    ``max_fraction`` of its finished subjobs failed, and the backend allows it; Ganga itself
    skips subjobs past ``[PollThread]MaxNumResubmits``.
    """
    try:
        if not master.do_auto_resubmit:
            return
        statuses = [str(subjob.status) for subjob in master.subjobs]
        completed, failed = statuses.count("completed"), statuses.count("failed")
        if failed == 0 or failed / (completed + failed) >= max_fraction:
            return
        if master.backend.check_auto_resubmit():
            log.info("auto-resubmitting the failed subjobs of job %s (%d of %d)", master.id, failed, len(statuses))
            master.auto_resubmit()
    except Exception:
        log.exception("auto-resubmit of job %s failed", getattr(master, "id", "?"))
