"""A lane's output fetches: planned within the allowance, adaptive, hedged, settled exactly once.

A dispatcher starts a fetch when the adaptive fetch limit has a free slot and the service's
calls-per-minute allowance has room beyond what status polls need, so a flood of fetches
never makes a poll wait. Fetches go in order: a user's requests, then the groups closest to
complete, then the oldest. A fetch's timeout follows the recent p99 fetch latency; one
slower than the recent p95 is hedged where the losing call is free to cancel, unless the
lane is coming back from failures. A fetch that fails ``fetch_max_attempts`` times leaves
its job failed-to-collect, kept for a manual retry; a disk fault on this machine pauses
this lane's fetches alone.

:class:`OutputCollection` is a part of :class:`~monitor_core._lane.Lane`, kept in its own
module because it is a job of its own; it uses the lane's operation life cycle and calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final, NamedTuple

from ._events import Event, LocalFault
from ._health import LaneHealth, LatencyWindow
from ._limiter import AimdLimit, CallAllowance
from ._model import Job, Operation, OpKind, OpState, Outcome
from ._policy import backoff_delay
from .backends._base import OutputUnavailable, ServiceUnreachable

if TYPE_CHECKING:
    from ._book import JobBook
    from ._breaker import CircuitBreaker
    from ._clock import Clock
    from ._lane import LaneContext
    from ._settings import SchedulerConfig
    from .backends._base import Backend, Capabilities

__all__ = ["FetchQueue", "OutputCollection"]

log = logging.getLogger(__name__)

URGENT: Final = 0
"""Priority of a user's request; planned work keeps the operation default."""
_TAIL_SAMPLES: Final = 20
"""Fetch latencies needed before timeouts and hedging follow them."""


class FetchQueue:
    """Jobs waiting for their outputs: a user's requests first, then groups closest to complete, oldest first."""

    def __init__(self, open_in_group: Callable[[str], int]) -> None:
        self._urgent: deque[str] = deque()
        self._groups: dict[str, deque[str]] = {}
        self._open_in_group = open_in_group
        self.queued: set[str] = set()

    def __len__(self) -> int:
        return len(self.queued)

    def push(self, job: Job, *, urgent: bool = False, front: bool = False) -> None:
        if urgent:
            self._urgent.append(job.job_id)
        else:
            group = self._groups.get(job.group)
            if group is None:
                group = self._groups[job.group] = deque()
            if front:
                group.appendleft(job.job_id)
            else:
                group.append(job.job_id)
        self.queued.add(job.job_id)

    def pop(self) -> str | None:
        while self._urgent:
            job_id = self._urgent.popleft()
            if job_id in self.queued:
                self.queued.discard(job_id)
                return job_id
        while self._groups:
            name = min(self._groups, key=self._open_in_group)
            group = self._groups[name]
            while group:
                job_id = group.popleft()
                if job_id in self.queued:
                    self.queued.discard(job_id)
                    if not group:
                        del self._groups[name]
                    return job_id
            del self._groups[name]
        return None


class _Attempt(NamedTuple):
    """How one fetch attempt ended."""

    outcome: Outcome
    error: str | None
    staging: Path
    """The directory the attempt wrote into."""
    unreachable: bool = False
    """No connection to the service was made: the failure is the service's, not the job's."""


class OutputCollection:
    """The output-fetch half of a lane."""

    if TYPE_CHECKING:
        # Provided by the lane.
        backend: Backend
        name: str
        caps: Capabilities
        paused: bool
        breaker: CircuitBreaker
        health: LaneHealth
        allowance: CallAllowance
        ops: dict[int, Operation]
        in_flight: int
        fetches_in_flight: int
        _book: JobBook
        _clock: Clock
        _context: LaneContext
        _settings: SchedulerConfig
        _publish: Callable[[Event], None]
        _draining: bool
        _idle: asyncio.Event

        def _enqueue(self, op: Operation, *, again: bool = False) -> None: ...
        def _start(self, op: Operation) -> None: ...
        def _check_idle(self) -> None: ...
        def _finish(
            self,
            op: Operation,
            outcome: Outcome,
            *,
            error: str | None = None,
            retry_in: float | None = None,
            changed: int = 0,
            detail: str = "",
            answered_at: float | None = None,
        ) -> float: ...
        def _retry_later(self, op: Operation, delay: float, requeue: Callable[[], None]) -> None: ...
        def _timeout(self, latencies: LatencyWindow) -> float: ...
        def _update_reserve(self) -> None: ...
        async def _call(
            self, call: Callable[[], Awaitable[object]], timeout_s: float | None = None, *, writes_locally: bool = False
        ) -> tuple[Outcome, object, str | None]: ...

    def _init_collection(self) -> None:
        initial = max(1, self.caps.fetch_concurrency)
        # A blocking client's calls run on a pool of fixed size: more in flight would only queue there.
        self.fetch_limit = AimdLimit(
            initial, maximum=initial if self.caps.blocking else max(initial, self._settings.fetch_limit_max)
        )
        self._fetches = FetchQueue(lambda group: self._book.open_in_group[group])
        self._fetch_ops: dict[str, Operation] = {}
        self._fetch_attempts: dict[str, int] = {}
        self._fetch_wakeup = asyncio.Event()
        self._waiting_outputs: dict[str, float] = {}
        """Jobs reported finished whose outputs are not in the session yet -> when reported (monotonic)."""
        self._local_fault: str | None = None
        self._local_faults = 0
        self._fault_until = 0.0
        self.hedges_total = 0

    def queue_fetch(self, job: Job, *, urgent: bool = False) -> None:
        """Plan the collection of a job's outputs (a user's request goes ahead of the others)."""
        job_id = job.job_id
        if job_id not in self._waiting_outputs:
            # Reported finished now, or in an earlier session (restored ``completing`` jobs).
            clock = self._clock
            self._waiting_outputs[job_id] = min(clock.now(), clock.to_monotonic(job.status_since))
        if urgent:
            self._fetch_attempts.pop(job_id, None)
        op = self._fetch_ops.get(job_id)
        if op is not None:
            if urgent and job_id in self._fetches.queued:
                op.priority = URGENT
                self._fetches.push(job, urgent=True)
                self._fetch_wakeup.set()
            return  # queued or in flight already: collected once
        op = Operation(OpKind.FETCH_OUTPUT, self.name, (job_id,), priority=URGENT if urgent else 10)
        self._fetch_ops[job_id] = op
        self._enqueue(op)
        self._fetches.push(job, urgent=urgent)
        self._fetch_wakeup.set()

    def results_lag(self, now: float) -> float:
        """How long the oldest job reported finished has waited for its outputs, in seconds."""
        for since in self._waiting_outputs.values():
            return max(0.0, now - since)
        return 0.0

    def _fetch_rate(self) -> float | None:
        """Fetches a second the allowance (or, outside it, the fetch limit) permits."""
        share = None if self.caps.fetch_outside_allowance else self.allowance.fetch_share()
        if share is not None:
            return share / 60.0
        latency = self.health.fetch_latency.quantile(0.5)
        if latency is None or latency <= 0:
            return None
        return self.fetch_limit.limit / latency

    def _hedge_after(self) -> float | None:
        """Seconds after which a fetch is slow enough to hedge (the recent p95), or ``None``."""
        latencies = self.health.fetch_latency
        # Only a call on the loop can lose the race for free: a losing call in a worker process
        # costs the worker's restart, and one on a thread keeps its thread until it answers.
        if not self._settings.hedge_fetches or self.caps.blocking or len(latencies) < _TAIL_SAMPLES:
            return None
        # A service coming back from failures is slow because it is loaded: a second request adds load.
        if self.breaker.state != "closed":
            return None
        return latencies.quantile(0.95)

    def _counts(self) -> bool:
        return not self.caps.fetch_outside_allowance

    async def run_fetcher(self) -> None:
        """Start output fetches as the fetch limit, the allowance and the breaker allow, forever."""
        async with asyncio.TaskGroup() as fetches:
            while not self._draining:
                self._fetch_wakeup.clear()
                delay = self._fetch_delay()
                if delay == 0.0:
                    trial = await self.breaker.acquire()
                    if self._fetch_delay() != 0.0:
                        self.breaker.release(trial=trial)
                        continue
                    job_id = self._fetches.pop()
                    assert job_id is not None
                    if self._counts():
                        self.allowance.take("fetch", self._clock.now())
                    # Counted now, not when the task first runs, so the next turn sees the slot taken.
                    self.fetches_in_flight += 1
                    fetches.create_task(self._fetch(job_id, trial=trial), name=f"monitor[lane={self.name}].fetch")
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._fetch_wakeup.wait()

    def _fetch_delay(self) -> float | None:
        """0 when a fetch may start now, else seconds to wait (``None``: until something changes)."""
        if self.paused or self._draining or not self._fetches or self.fetches_in_flight >= self.fetch_limit.limit:
            return None
        now = self._clock.now()
        if now < self._fault_until:
            return self._fault_until - now
        if self._counts():
            self._update_reserve()
            return self.allowance.wait_time("fetch", now)
        return 0.0

    async def _fetch(self, job_id: str, *, trial: bool) -> None:
        """Collect one job's outputs: one attempt, hedged when slow, settled exactly once.

        ``trial``: the attempt is the breaker's half-open trial (see :meth:`CircuitBreaker.acquire`).
        """
        book, sink = self._book, self._context.outputs
        job = book.jobs[job_id]
        op = self._fetch_ops[job_id]
        self._start(op)
        try:
            try:
                staging = await sink.begin(job_id)
                if staging is None:
                    # Collected before a crash cut the bookkeeping short: do not fetch twice.
                    self.breaker.release(trial=trial)
                    files = await sink.collected_files(job_id)
                    self._finish(op, "done", changed=1)
                    await self._collected(job, files, op)
                    return
                attempt = await self._fetch_hedged(job, staging)
                outcome, error = attempt.outcome, attempt.error
                if outcome == "done":
                    files = await sink.finish(job_id, attempt.staging)
            except OSError as exc:
                self.breaker.release(trial=trial)
                self._on_local_fault(op, job, exc)
                return
            except OutputUnavailable as exc:
                self.breaker.record_success(trial=trial)  # the service answered
                self._finish(op, "error", error=str(exc))
                self._settle_failure(job, f"output unavailable: {exc}", op, gone=True)
                return
            if outcome == "done":
                self._clear_local_fault()
                latency = self._finish(op, "done", changed=1)
                self.breaker.record_success(trial=trial)
                self.fetch_limit.on_success(latency, self.fetches_in_flight)
                self.health.fetch_latency.add(latency)
                await self._collected(job, files, op)
                return
            assert error is not None
            self.breaker.record_failure(error, trial=trial)
            self.fetch_limit.on_failure(timed_out=outcome == "timeout")
            attempts = self._fetch_attempts.get(job_id, 0)
            if not attempt.unreachable:
                # A service that takes no connection says nothing of the job: the job waits for
                # it (the breaker paces the asking), however long it is down.
                attempts = self._fetch_attempts[job_id] = attempts + 1
            if attempts >= self._settings.fetch_max_attempts or self._draining:
                self._finish(op, outcome, error=error)
                if not self._draining:
                    self._settle_failure(job, f"{error} (after {attempts} attempts)", op)
                return
            delay = backoff_delay(
                max(attempts, 1), base=self._settings.backoff_base, cap=self._settings.fetch_backoff_cap
            )
            self._finish(op, outcome, error=error, retry_in=delay)
            self._retry_later(op, delay, lambda: self._requeue_fetch(op, job))
        except asyncio.CancelledError:
            self.breaker.release(trial=trial)
            if op.op_id in self.ops and op.state == OpState.IN_FLIGHT:
                self._finish(op, "cancelled", error="shutting down")
            raise
        finally:
            self.fetches_in_flight -= 1
            self._check_idle()
            self._fetch_wakeup.set()

    async def _fetch_hedged(self, job: Job, staging: Path) -> _Attempt:
        """One fetch attempt; past the recent p95 a second request races it, and the first answer wins.

        Returns:
            The winner, or the last to end when none succeeded.

        Raises:
            OutputUnavailable: the backend will never have the outputs.
            OSError: a staging directory could not be made.
        """
        sink, timeout_s = self._context.outputs, self._timeout(self.health.fetch_latency)
        backend_id = job.backend_id or ""

        async def attempt(directory: Path) -> _Attempt:
            outcome, result, error = await self._call(
                lambda: self.backend.fetch_output(backend_id, directory), timeout_s, writes_locally=True
            )
            return _Attempt(outcome, error, directory, unreachable=isinstance(result, ServiceUnreachable))

        self.health.fetches_total += 1
        attempts: dict[asyncio.Task[_Attempt], Path] = {asyncio.ensure_future(attempt(staging)): staging}
        winner: _Attempt | None = None
        try:
            hedge_after = self._hedge_after()
            if hedge_after is not None:
                done, _ = await asyncio.wait(attempts, timeout=hedge_after)
                if not done and (not self._counts() or self.allowance.take("fetch", self._clock.now())):
                    second = await sink.begin(job.job_id)
                    if second is not None:
                        self.hedges_total += 1
                        self.health.fetches_total += 1
                        self.health.call_started(self._clock.now())
                        attempts[asyncio.ensure_future(attempt(second))] = second
            pending = set(attempts)
            last: _Attempt | None = None
            while pending and winner is None:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    last = task.result()
                    if last.outcome == "done" and winner is None:
                        winner = last
            result = winner or last
            assert result is not None
            return result
        finally:
            losers = [task for task in attempts if not task.done()]
            for task in losers:
                task.cancel()
            for task in losers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for directory in attempts.values():
                if winner is None or directory != winner.staging:
                    with contextlib.suppress(OSError):
                        await sink.release(directory)

    def _requeue_fetch(self, op: Operation, job: Job) -> None:
        self._enqueue(op, again=True)
        self._fetches.push(job, urgent=op.priority == URGENT, front=True)
        self._fetch_wakeup.set()

    async def _collected(self, job: Job, files: tuple[str, ...], op: Operation) -> None:
        await self._book.output_collected(job, files, op.op_id)
        self._outputs_settled(job.job_id)

    def _settle_failure(self, job: Job, reason: str, op: Operation, *, gone: bool = False) -> None:
        self._book.collection_failed(job, reason, op.op_id, gone=gone)
        self._outputs_settled(job.job_id)

    def _outputs_settled(self, job_id: str) -> None:
        self._fetch_attempts.pop(job_id, None)
        self._waiting_outputs.pop(job_id, None)

    def _on_local_fault(self, op: Operation, job: Job, exc: OSError) -> None:
        """A disk fault on this machine: this lane's fetches back off; the job waits, nothing is lost."""
        self._local_faults += 1
        backoff = min(
            self._settings.fetch_backoff_cap, self._settings.local_fault_backoff * 2.0 ** (self._local_faults - 1)
        )
        self._fault_until = self._clock.now() + backoff
        error = f"{type(exc).__name__}: {exc}"
        log.error("%s: cannot commit job %s's outputs, fetches pause %.1fs: %s", self.name, job.job_id, backoff, error)
        self._local_fault = error
        self._publish(LocalFault(at=self._clock.wall_now(), backend=self.name, what="committing outputs", error=error))
        self._finish(op, "error", error=error, retry_in=backoff)
        self.health.retries_total += 1
        op.attempt += 1
        self._requeue_fetch(op, job)

    def _clear_local_fault(self) -> None:
        if self._local_fault is None:
            return
        self._local_fault, self._local_faults = None, 0
        self._publish(
            LocalFault(at=self._clock.wall_now(), backend=self.name, what="committing outputs", error="", cleared=True)
        )
