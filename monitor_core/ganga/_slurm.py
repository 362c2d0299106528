"""Ganga's Slurm jobs in drive mode: one bulk query decides which jobs Ganga has to look at.

Ganga's ``Slurm`` backend follows a job through the status file its job script writes in
the job's output directory: one file read per job per poll, and a job that died without
writing its exit code (cancelled, out of time or memory, its node lost) is noticed only when
its heartbeat file has been stale for ``[Slurm]timeout`` (600 s). Here a poll first asks
Slurm about the whole batch at once, through the ``slurm`` backend's ``squeue`` query, and
runs Ganga's own update only on the jobs whose Slurm state has moved past Ganga's: started,
or left the queue. The others are confirmed as they are. A job Slurm says has ended whose
status file still holds no exit code after a grace period is failed through Ganga, the
verdict Ganga's heartbeat check would reach ten minutes later.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Final

from .._model import JobStatus
from ..backends._base import BackendError, Capabilities, PollResult, Rejection, StatusReport
from ..backends.slurm import SlurmBackend, SlurmCommands
from ._backend import GangaBackend, answer_of
from ._calls import BatchJobView, CallOutcome, batch_views, fail_vanished
from ._changes import StatusChange, ganga_status

__all__ = ["GANGA_SLURM", "GangaSlurmBackend"]

log = logging.getLogger(__name__)

GANGA_SLURM: Final = "Slurm"
"""Ganga's name of its Slurm backend class."""
_WAITING: Final = "submitted"
_RUNNING: Final = "running"


class GangaSlurmBackend(GangaBackend):
    """Ganga's ``Slurm`` backend, polled with one ``squeue`` per batch.

    Args:
        commands: how to reach the cluster Ganga submits to.
        vanish_grace: seconds a job may stay active in Ganga after Slurm says it ended, for
            its exit code to reach the (possibly network) file system, before it is failed.
        name, capabilities, executor, late_changes, max_resubmit_fraction: as for :class:`GangaBackend`.
    """

    def __init__(
        self,
        name: str,
        capabilities: Capabilities,
        *,
        executor: concurrent.futures.ThreadPoolExecutor,
        late_changes: Callable[[list[StatusChange]], None],
        max_resubmit_fraction: float | None,
        commands: SlurmCommands,
        vanish_grace: float,
    ) -> None:
        super().__init__(
            name,
            capabilities,
            executor=executor,
            late_changes=late_changes,
            max_resubmit_fraction=max_resubmit_fraction,
        )
        # Polling only: the work directory is where this backend's own submissions would write.
        self.slurm = SlurmBackend(Path("."), commands=commands, name=self.name)
        self.vanish_grace = vanish_grace
        self._ended_since: dict[str, float] = {}

    async def poll(self, backend_ids: Sequence[str]) -> PollResult:
        views = await self.in_threads(batch_views, backend_ids)
        by_batch_id = {view.batch_id: job_id for job_id, view in views.items() if view.batch_id.isdigit()}
        try:
            said = await self.slurm.poll(list(by_batch_id)) if by_batch_id else PollResult()
        except BackendError as exc:
            # Ganga's status files still tell how jobs end: fall back on them while Slurm is away.
            log.warning("Slurm could not be asked (%s); Ganga's own update reads the status files", exc)
            return await super().poll(backend_ids)
        slurm_status = {by_batch_id[r.backend_id]: r for r in said.reports if r.backend_id in by_batch_id}
        refused = [
            Rejection(by_batch_id.get(r.backend_id or ""), r.category, f"Slurm: {r.reason}") for r in said.rejections
        ]
        confirmed: list[StatusChange] = []
        to_update: list[str] = []
        for job_id in backend_ids:
            view = views.get(job_id)
            report = slurm_status.get(job_id)
            if view is not None and report is not None and not _moved_past(view, report.status):
                confirmed.append(view.present)
            else:
                to_update.append(job_id)
        changes = confirmed
        outcome = CallOutcome()
        if to_update:
            updated, outcome = await self.in_ganga(to_update, self.update)
            changes = confirmed + updated
        vanished = self._vanished(backend_ids, slurm_status, changes)
        if vanished:
            failed, failed_outcome = await self.in_ganga(
                list(vanished), lambda job_ids, context: fail_vanished(job_ids, context, vanished)
            )
            changes += failed
            outcome = _merged(outcome, failed_outcome)
        answer = answer_of(changes, outcome)
        # Ganga's status is the job's status; Slurm's state and reason ("PENDING (Resources)")
        # are its detail, which tells a user why a job still waits.
        reports = [
            replace(report, info=said_of.info)
            if not report.info and (said_of := slurm_status.get(report.backend_id)) is not None
            else report
            for report in answer.reports
        ]
        return PollResult(reports=reports, rejections=answer.rejections + refused)

    def _vanished(
        self, job_ids: Sequence[str], slurm_status: Mapping[str, StatusReport], changes: Sequence[StatusChange]
    ) -> dict[str, str]:
        """Jobs Slurm says ended that Ganga still has active past the grace period, with the reason."""
        now = time.monotonic()
        latest = {change.job_id: change.new for change in changes}
        vanished: dict[str, str] = {}
        for job_id in job_ids:
            report = slurm_status.get(job_id)
            ganga = ganga_status(latest.get(job_id))
            if report is None or not report.status.is_final or ganga is None or not ganga.is_active:
                self._ended_since.pop(job_id, None)
                continue
            since = self._ended_since.setdefault(job_id, now)
            if now - since >= self.vanish_grace:
                self._ended_since.pop(job_id)
                vanished[job_id] = f"Slurm says it ended ({report.info or report.status.value}) without an exit code"
        return vanished


def _moved_past(view: BatchJobView, slurm: JobStatus) -> bool:
    """Whether Slurm's state of a job is news Ganga's update has to act on."""
    if view.status == _WAITING:
        return slurm != JobStatus.SUBMITTED
    if view.status == _RUNNING:
        return slurm != JobStatus.RUNNING
    return True  # completing, a master, anything else: Ganga's own update decides


def _merged(first: CallOutcome, second: CallOutcome) -> CallOutcome:
    return CallOutcome(
        confirmations=first.confirmations + second.confirmations,
        errors={**first.errors, **second.errors},
        missing=first.missing + second.missing,
    )
