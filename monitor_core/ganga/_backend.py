"""A Ganga backend as a drive-mode lane sees it: Ganga's own monitoring calls on worker threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from .._model import JobSpec
from ..backends._base import (
    Backend,
    BackendError,
    Capabilities,
    FetchResult,
    OutputUnavailable,
    PollResult,
    Rejection,
    StatusReport,
)
from ._calls import CallOutcome, update_jobs
from ._changes import CallContext, StatusChange, ganga_status

__all__ = ["GangaBackend", "answer_of", "info_of"]

_T = TypeVar("_T")


class GangaBackend(Backend):
    """One Ganga backend (``Local``, ``Interactive``, ``Slurm``, ...) as a lane sees it.

    A job's backend id is its Ganga full id. Status changes made during a call come back as
    the call's answer, in order, so the bus shows every one of them under the call's operation.

    Args:
        name: Ganga's name of the backend class.
        capabilities: limits and interval for its lane.
        executor: the worker threads that make Ganga's calls.
        late_changes: takes the changes of a call the lane gave up on, when it finally ends.
        max_resubmit_fraction: Ganga's auto-resubmit threshold, or ``None`` to never resubmit.
    """

    def __init__(
        self,
        name: str,
        capabilities: Capabilities,
        *,
        executor: concurrent.futures.ThreadPoolExecutor,
        late_changes: Callable[[list[StatusChange]], None],
        max_resubmit_fraction: float | None,
    ) -> None:
        super().__init__(name, capabilities)
        self._executor = executor
        self._late_changes = late_changes
        self._max_resubmit_fraction = max_resubmit_fraction
        self._lock = threading.Lock()
        self._calls: dict[str, concurrent.futures.Future[CallOutcome]] = {}
        """Each job's call still running on a worker thread, even if the lane gave up on it."""
        self._abandoned: set[concurrent.futures.Future[CallOutcome]] = set()

    async def submit(self, specs: Sequence[JobSpec]) -> list[str]:
        raise BackendError("jobs of a Ganga session are submitted through Ganga")

    async def fetch_output(self, backend_id: str, destination: Path) -> FetchResult:
        raise OutputUnavailable("Ganga puts the output in its own workspace")

    async def poll(self, backend_ids: Sequence[str]) -> PollResult:
        return answer_of(*await self.in_ganga(backend_ids, self.update))

    async def in_threads(self, work: Callable[[Sequence[str]], _T], backend_ids: Sequence[str]) -> _T:
        """Run ``work`` on a worker thread: it may read Ganga's registry, not change it."""
        return await asyncio.wrap_future(self._executor.submit(work, backend_ids))

    def update(self, job_ids: Sequence[str], context: CallContext) -> CallOutcome:
        """Ganga's own monitoring call on ``job_ids`` (worker thread)."""
        return update_jobs(job_ids, context, self._max_resubmit_fraction)

    async def in_ganga(
        self, backend_ids: Sequence[str], work: Callable[[Sequence[str], CallContext], CallOutcome]
    ) -> tuple[list[StatusChange], CallOutcome]:
        """Run ``work`` on jobs of this backend on a worker thread; the changes it made, and its outcome.

        Raises:
            BackendError: every job's update raised, or all of them are still inside an earlier call.
        """
        # Two calls on one job would both run its completion, so a job still inside an earlier
        # call waits for it (a "refresh now" can overlap a regular poll), and a job whose
        # earlier call the lane gave up on is left out until that call comes back.
        while True:
            with self._lock:
                live = {
                    call
                    for job_id in backend_ids
                    if (call := self._calls.get(job_id)) is not None and call not in self._abandoned
                }
            if not live:
                break
            await asyncio.wait([asyncio.wrap_future(call) for call in live])
        with self._lock:
            free = [job_id for job_id in backend_ids if job_id not in self._calls]
            if not free:
                raise BackendError(f"the earlier call on job(s) {', '.join(backend_ids)} is still inside Ganga")
            context = CallContext(source="poll", batch=frozenset(free))
            future = self._executor.submit(work, free, context)
            for job_id in free:
                self._calls[job_id] = future
        future.add_done_callback(lambda done: self._release(free, done))
        try:
            outcome: CallOutcome = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # Timed out: the thread goes on inside Ganga; what it changes still reaches the bus.
            with self._lock:
                self._abandoned.add(future)
            future.add_done_callback(lambda _: self._late_changes(list(context.collected)))
            raise
        except Exception as exc:
            self._late_changes(list(context.collected))
            raise BackendError(f"{type(exc).__name__}: {exc}") from exc
        if outcome.failed_as_a_whole:
            self._late_changes(list(context.collected))
            job_id, error = next(iter(outcome.errors.items()))
            raise BackendError(f"update of {len(outcome.errors)} job(s) raised, e.g. {job_id}: {error}")
        return context.collected + outcome.confirmations, outcome

    def _release(self, job_ids: Sequence[str], call: concurrent.futures.Future[CallOutcome]) -> None:
        with self._lock:
            for job_id in job_ids:
                if self._calls.get(job_id) is call:
                    del self._calls[job_id]
            self._abandoned.discard(call)

    async def close(self) -> None:
        # A thread stuck inside a backend cannot be joined; do not wait for it.
        self._executor.shutdown(wait=False, cancel_futures=True)


def answer_of(changes: list[StatusChange], outcome: CallOutcome) -> PollResult:
    """A lane's answer from the changes of Ganga's calls and what they found."""
    reports: list[StatusReport] = []
    rejections: list[Rejection] = []
    for change in changes:
        status = ganga_status(change.new)
        if status is None:
            rejections.append(Rejection(change.job_id, "unknown_state", f"Ganga status {change.new!r}"))
            continue
        reports.append(StatusReport(change.job_id, status, info=info_of(change), exit_code=change.exit_code))
    for job_id, error in outcome.errors.items():
        rejections.append(Rejection(job_id, "garbage", f"its update raised {error}"))
    for job_id in outcome.missing:
        rejections.append(Rejection(job_id, "unknown_job", "no longer in Ganga's registry"))
    return PollResult(reports=reports, rejections=rejections)


def info_of(change: StatusChange) -> str:
    """A report's info: Ganga's own word for a status the monitor names differently."""
    return change.new if ganga_status(change.new) != change.new else ""
