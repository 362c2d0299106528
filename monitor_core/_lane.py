"""A lane: everything the scheduler does for one backend.

Active jobs wait in a due-time heap. The planner takes the jobs that are due (and those
due within a short window, to fill batches) and turns them into poll operations of at
most the backend's bulk size; "refresh now" requests become operations of their own at
the front of the queue. ``max_concurrency`` poll workers and ``fetch_concurrency`` fetch
workers take operations from their queues, so output fetches never hold up polls. Each
call runs under a timeout; failures are retried with jittered backoff and feed the
lane's circuit breaker. Nothing here blocks or raises into the scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ._breaker import CircuitBreaker
from ._events import (
    BackendRecord,
    BreakerChanged,
    OpFinished,
    OpQueued,
    OpRecord,
    OpStarted,
    RejectionCategory,
    op_record,
)
from ._model import Job, Operation, OpKind, OpState, Outcome
from ._policy import backoff_delay
from .backends._base import Backend, BackendError, MalformedAnswer, OutputUnavailable, PollResult, StatusReport

if TYPE_CHECKING:
    from ._scheduler import Scheduler

__all__ = ["Lane", "SchedulerConfig"]

log = logging.getLogger(__name__)

_URGENT: Final = 0
"""Priority of a user's refresh; planned polls keep the operation default."""
_APPLY_SLICE: Final = 100
"""Reports applied between two yields to the loop (about a millisecond of work)."""
_PLAN_PER_ROUND: Final = 2000
"""Due jobs batched per planner round before it yields to the loop."""


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Policies shared by every lane. Times are seconds."""

    max_retries: int = 3
    """Retries of a failed poll before its jobs go back to waiting for their next turn."""
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    fetch_backoff_cap: float = 60.0
    breaker_threshold: int = 5
    breaker_reset: float = 5.0
    breaker_reset_cap: float = 120.0
    batch_window: float = 0.5
    """Jobs due this soon join a batch that is being formed anyway."""
    sample_every: float = 1.0
    """How often lag and health are published."""
    drain_timeout: float = 5.0


class Lane:
    """The scheduling of one backend's monitoring calls."""

    def __init__(self, backend: Backend, scheduler: Scheduler) -> None:
        self.backend = backend
        self.name = backend.name
        self.caps = backend.capabilities
        self._scheduler = scheduler
        self._config = scheduler.config
        self.base_interval = self.caps.poll_interval
        self.paused = False
        self._resumed = asyncio.Event()
        self._resumed.set()
        self.breaker = CircuitBreaker(
            threshold=self._config.breaker_threshold,
            reset_after=self._config.breaker_reset,
            reset_cap=self._config.breaker_reset_cap,
            clock=time.monotonic,
            on_change=self._on_breaker_change,
        )
        self.by_backend_id: dict[str, str] = {}
        self.active: set[str] = set()
        """Ids of this lane's jobs whose backend is polled: the index the planner works from."""
        # Heap entries carry a whole batch's jobs: a sweep returns jobs to the heap hundreds at
        # a time with one due time, and heap operations per job were the planner's main cost.
        # ``_due_at`` is the truth; an entry's job whose ``_due_at`` differs is stale.
        self._due: list[tuple[float, int, tuple[str, ...]]] = []
        self._due_at: dict[str, float] = {}
        self._seq = itertools.count()
        self._in_ops: dict[str, int] = {}
        self._urgent: list[str] = []
        self._poll_queue: asyncio.PriorityQueue[tuple[int, int, Operation]] = asyncio.PriorityQueue()
        self._fetch_queue: asyncio.PriorityQueue[tuple[int, int, Operation]] = asyncio.PriorityQueue()
        self.ops: dict[int, Operation] = {}
        self._wakeup = asyncio.Event()
        self._draining = False
        self.in_flight = 0
        self.fetches_in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._retry_timers: set[asyncio.TimerHandle] = set()
        # Health counters for samples and the summary.
        self.calls_total = 0
        self.retries_total = 0
        self.rejections_total = 0
        self.fetches_total = 0
        self._call_times: deque[float] = deque()
        self._recent_outcomes: deque[bool] = deque(maxlen=50)
        self.last_latency: float | None = None
        self.lag_samples: deque[float] = deque(maxlen=100_000)

    # -- the index of active jobs --------------------------------------------------------------

    def activate(self, job: Job, due: float) -> None:
        """Index an active job and make it due at monotonic time ``due``."""
        self.active.add(job.job_id)
        self._schedule(job.job_id, due)

    def deactivate(self, job_id: str) -> None:
        """Drop a job that needs no more polling (its heap entry goes stale)."""
        self.active.discard(job_id)
        self._due_at.pop(job_id, None)

    def _schedule(self, job_id: str, due: float) -> None:
        if self._in_ops.get(job_id):
            return
        self._due_at[job_id] = due
        heapq.heappush(self._due, (due, next(self._seq), (job_id,)))
        if due <= self._due[0][0]:
            self._wakeup.set()

    def _next_due(self, job: Job, monotonic: float, wall: float) -> float:
        scheduler = self._scheduler
        return monotonic + scheduler.policy.interval(job, self.base_interval, wall, scheduler.groups.get(job.group))

    def reschedule(self, job: Job) -> None:
        """Make an active job due one interval after now (it was just confirmed)."""
        if job.job_id in self.active:
            self._schedule(job.job_id, self._next_due(job, time.monotonic(), time.time()))

    def next_poll_at(self, job_id: str) -> float | None:
        """Monotonic time the job is due, or ``None`` while it is in an operation or inactive."""
        return self._due_at.get(job_id)

    def _peek_due(self) -> float | None:
        heap, due_at = self._due, self._due_at
        while heap:
            due, seq, job_ids = heap[0]
            for index, job_id in enumerate(job_ids):
                if due_at.get(job_id) == due:
                    if index:
                        # Same key, so the heap stays valid; the stale head is not scanned again.
                        heap[0] = (due, seq, job_ids[index:])
                    return due
            heapq.heappop(heap)
        return None

    def rebuild_due_times(self) -> None:
        """Recompute every waiting job's due time (after the interval changed)."""
        jobs = self._scheduler.jobs
        offset = time.time() - time.monotonic()
        self._due.clear()
        for job_id in list(self._due_at):
            job = jobs[job_id]
            self._due_at[job_id] = job.last_confirmed - offset + self._scheduler.interval_for(job, self)
            self._due.append((self._due_at[job_id], next(self._seq), (job_id,)))
        heapq.heapify(self._due)
        self._wakeup.set()

    # -- lag and health ------------------------------------------------------------------------

    def lag(self, now: float) -> float:
        """How far past its due time the stalest active job is, in seconds."""
        oldest = self._peek_due()
        for op in self.ops.values():
            if op.kind == OpKind.POLL and (oldest is None or op.oldest_due < oldest):
                oldest = op.oldest_due
        return 0.0 if oldest is None else max(0.0, now - oldest)

    def calls_per_minute(self, now: float) -> float:
        """Calls started in the last minute."""
        while self._call_times and self._call_times[0] < now - 60.0:
            self._call_times.popleft()
        return float(len(self._call_times))

    def record(self, now: float) -> BackendRecord:
        """The lane's health now."""
        lag = self.lag(now)
        outcomes = self._recent_outcomes
        return BackendRecord(
            name=self.name,
            active_jobs=len(self.active),
            queued_ops=sum(1 for op in self.ops.values() if op.state == OpState.QUEUED),
            in_flight=self.in_flight,
            concurrency_limit=self.caps.max_concurrency,
            fetches_in_flight=self.fetches_in_flight,
            fetch_limit=self.caps.fetch_concurrency,
            max_batch=self.caps.max_batch,
            lag=lag,
            poll_interval=self.base_interval,
            breaker=self.breaker.state,
            paused=self.paused,
            calls_per_minute=self.calls_per_minute(now),
            max_calls_per_minute=self.caps.max_calls_per_minute,
            error_rate=(outcomes.count(False) / len(outcomes)) if outcomes else 0.0,
            last_latency=self.last_latency,
            calls_total=self.calls_total,
            retries_total=self.retries_total,
            rejections_total=self.rejections_total,
        )

    def op_records(self) -> list[OpRecord]:
        """Queued and in-flight operations, oldest first."""
        wall = self._scheduler.wall
        return [
            op_record(
                op,
                enqueued_wall=wall(op.enqueued_at),
                started_wall=None if op.started_at is None else wall(op.started_at),
            )
            for op in sorted(self.ops.values(), key=lambda o: o.enqueued_at)
        ]

    def _on_breaker_change(self, state: str, reason: str) -> None:
        log.warning("%s: circuit breaker %s (%s)", self.name, state, reason)
        self._scheduler.publish(BreakerChanged(at=time.time(), backend=self.name, state=state, reason=reason))  # type: ignore[arg-type]

    # -- user requests ------------------------------------------------------------------------

    def refresh_now(self, job_id: str) -> None:
        """Poll this job ahead of everything queued."""
        self._urgent.append(job_id)
        self._wakeup.set()

    def pause(self) -> None:
        """Stop making calls until :meth:`resume` (queued work stays queued)."""
        self.paused = True
        self._resumed.clear()

    def resume(self) -> None:
        """Make calls again."""
        self.paused = False
        self._resumed.set()
        self._wakeup.set()

    def set_interval(self, seconds: float) -> None:
        """Change the target interval between two confirmations of a job."""
        self.base_interval = seconds
        self.rebuild_due_times()

    # -- planning ------------------------------------------------------------------------------

    def _enqueue(self, op: Operation, *, again: bool = False) -> None:
        op.state = OpState.QUEUED
        if not again:
            op.enqueued_at = time.monotonic()
            self.ops[op.op_id] = op
            if op.kind == OpKind.POLL:
                for job_id in op.job_ids:
                    self._in_ops[job_id] = self._in_ops.get(job_id, 0) + 1
        queue = self._poll_queue if op.kind == OpKind.POLL else self._fetch_queue
        queue.put_nowait((op.priority, op.op_id, op))
        self._scheduler.publish(
            OpQueued(at=time.time(), op=op_record(op, enqueued_wall=self._scheduler.wall(op.enqueued_at)))
        )

    def queue_fetch(self, job_id: str) -> None:
        """Plan the output fetch of a job that finished at its backend."""
        self._enqueue(Operation(OpKind.FETCH_OUTPUT, self.name, (job_id,)))

    def _plan_urgent(self, now: float) -> None:
        urgent = [j for j in dict.fromkeys(self._urgent) if j in self.active]
        self._urgent.clear()
        for start in range(0, len(urgent), self.caps.max_batch):
            batch = tuple(urgent[start : start + self.caps.max_batch])
            for job_id in batch:
                self._due_at.pop(job_id, None)
            self._enqueue(Operation(OpKind.POLL, self.name, batch, priority=_URGENT, oldest_due=now))

    def _plan_due(self, now: float) -> bool:
        """Batch the due jobs; return True when some are left for another round."""
        first = self._peek_due()
        if first is None or first > now:
            return False
        horizon = now + min(self._config.batch_window, self.base_interval / 4)
        heap, due_at, max_batch = self._due, self._due_at, self.caps.max_batch
        batch: list[str] = []
        oldest = first
        planned = 0
        while (due := self._peek_due()) is not None and due <= horizon:
            _, seq, job_ids = heapq.heappop(heap)
            for index, job_id in enumerate(job_ids):
                if due_at.get(job_id) != due:
                    continue
                del due_at[job_id]
                if not batch:
                    oldest = due
                batch.append(job_id)
                if len(batch) == max_batch:
                    self._enqueue(Operation(OpKind.POLL, self.name, tuple(batch), oldest_due=oldest))
                    planned += len(batch)
                    batch = []
                    if planned >= _PLAN_PER_ROUND:
                        if index + 1 < len(job_ids):
                            heapq.heappush(heap, (due, seq, job_ids[index + 1 :]))
                        return True
        if batch:
            self._enqueue(Operation(OpKind.POLL, self.name, tuple(batch), oldest_due=oldest))
        return False

    async def run_planner(self) -> None:
        """Turn due jobs into poll operations, forever."""
        while True:
            self._wakeup.clear()
            now = time.monotonic()
            if self._urgent:
                self._plan_urgent(now)
            if not self.paused and not self._draining and self._plan_due(now):
                # A large backlog is planned in rounds, letting other tasks run in between.
                await asyncio.sleep(0)
                continue
            due = self._peek_due()
            timeout = None if due is None or self.paused else max(0.0, due - time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()

    # -- running operations ------------------------------------------------------------------

    async def _next_op(self, queue: asyncio.PriorityQueue[tuple[int, int, Operation]]) -> Operation | None:
        """The next live operation, or ``None`` once the lane is draining."""
        while True:
            await self._resumed.wait()
            _, _, op = await queue.get()
            if op.state != OpState.QUEUED or op.op_id not in self.ops:
                continue
            if self._draining:
                queue.put_nowait((op.priority, op.op_id, op))
                return None
            if self.paused:
                queue.put_nowait((op.priority, op.op_id, op))
                continue
            return op

    async def run_poll_worker(self) -> None:
        """Take poll operations one at a time, forever."""
        while (op := await self._next_op(self._poll_queue)) is not None:
            await self._take_budget()
            # The breaker is asked right before the call: it may have opened while we waited.
            await self.breaker.acquire()
            await self._run_poll(op)

    async def run_fetch_worker(self) -> None:
        """Take output fetches one at a time, forever."""
        while (op := await self._next_op(self._fetch_queue)) is not None:
            await self._take_budget()
            await self._run_fetch(op)

    async def _take_budget(self) -> None:
        """Wait until one more call keeps within the service's calls-per-minute allowance, and count it."""
        limit = self.caps.max_calls_per_minute
        now = time.monotonic()
        if limit is not None:
            while self.calls_per_minute(now) >= limit:
                await asyncio.sleep(self._call_times[0] + 60.0 - now)
                now = time.monotonic()
        # Counted here, with no await since the check, so workers waiting together cannot overshoot.
        self._call_times.append(now)

    def _start(self, op: Operation) -> None:
        op.state = OpState.IN_FLIGHT
        op.started_at = time.monotonic()
        self.calls_total += 1
        self._idle.clear()
        self._scheduler.publish(OpStarted(at=time.time(), op_id=op.op_id, backend=self.name, attempt=op.attempt))

    def _finish(
        self,
        op: Operation,
        outcome: Outcome,
        *,
        error: str | None = None,
        retry_in: float | None = None,
        changed: int = 0,
    ) -> None:
        latency = time.monotonic() - (op.started_at or time.monotonic())
        self.last_latency = latency
        if outcome != "cancelled":
            self._recent_outcomes.append(outcome == "done")
        op.error = error
        if retry_in is None:
            op.state = (
                OpState.DONE if outcome == "done" else OpState.CANCELLED if outcome == "cancelled" else OpState.FAILED
            )
            op.finished_at = time.monotonic()
            self.ops.pop(op.op_id, None)
            if op.kind == OpKind.POLL:
                for job_id in op.job_ids:
                    left = self._in_ops.get(job_id, 1) - 1
                    if left <= 0:
                        self._in_ops.pop(job_id, None)
                    else:
                        self._in_ops[job_id] = left
        self._scheduler.publish(
            OpFinished(
                at=time.time(),
                op_id=op.op_id,
                backend=self.name,
                kind=op.kind,
                outcome=outcome,
                latency=latency,
                error=error,
                retry_in=retry_in,
                changed=changed,
            )
        )
        if self.in_flight == 0 and self.fetches_in_flight == 0:
            self._idle.set()

    def _retry_later(self, op: Operation, delay: float) -> None:
        self.retries_total += 1
        op.attempt += 1
        op.state = OpState.QUEUED

        def requeue() -> None:
            self._retry_timers.discard(handle)
            if op.op_id in self.ops:
                self._enqueue(op, again=True)

        handle = asyncio.get_running_loop().call_later(delay, requeue)
        self._retry_timers.add(handle)

    async def _call(self, call: Callable[[], Awaitable[object]]) -> tuple[Outcome, object, str | None]:
        """Run one backend call under the lane's timeout.

        Raises:
            OutputUnavailable: passed through for the fetch path to settle the job.
            asyncio.CancelledError: the lane is shutting down.
        """
        timeout = asyncio.timeout(self.caps.call_timeout)
        try:
            async with timeout:
                result = await call()
        except TimeoutError:
            if timeout.expired():
                return "timeout", None, f"no answer within {self.caps.call_timeout:g}s"
            return "error", None, "TimeoutError raised by the backend"
        except MalformedAnswer as exc:
            self._reject(None, "garbage", str(exc))
            return "error", None, f"malformed answer: {exc}"
        except OutputUnavailable:
            raise
        except BackendError as exc:
            return "error", None, str(exc)
        except Exception as exc:
            log.exception("%s: backend raised unexpectedly", self.name)
            return "error", None, f"{type(exc).__name__}: {exc}"
        return "done", result, None

    def _reject(self, job_id: str | None, category: RejectionCategory, reason: str) -> None:
        self.rejections_total += 1
        self._scheduler.count_rejection(self.name, job_id, category, reason)

    async def _run_poll(self, op: Operation) -> None:
        self.in_flight += 1
        self._start(op)
        jobs = self._scheduler.jobs
        backend_ids = [jobs[j].backend_id or "" for j in op.job_ids]
        try:
            outcome, result, error = await self._call(lambda: self.backend.poll(backend_ids))
        except asyncio.CancelledError:
            self.in_flight -= 1
            self.breaker.release()
            self._finish(op, "cancelled", error="shutting down")
            raise
        self.in_flight -= 1
        if outcome == "done":
            assert isinstance(result, PollResult)
            self.breaker.record_success()
            changed = await self._apply_poll(op, result)
            self._finish(op, "done", changed=changed)
            self._return_to_heap(op)
            return
        assert error is not None
        self.breaker.record_failure(error)
        if op.attempt <= self._config.max_retries and not self._draining:
            delay = backoff_delay(op.attempt, base=self._config.backoff_base, cap=self._config.backoff_cap)
            self._finish(op, outcome, error=error, retry_in=delay)
            self._retry_later(op, delay)
        else:
            self._finish(op, outcome, error=error)
            self._return_to_heap(op)

    async def _apply_poll(self, op: Operation, result: PollResult) -> int:
        """Believe what a poll answered, a slice at a time so a big answer never stalls the loop."""
        scheduler, by_backend_id = self._scheduler, self.by_backend_id
        in_batch = set(op.job_ids)
        changed = 0
        for rejection in result.rejections:
            self._reject(by_backend_id.get(rejection.backend_id or ""), rejection.category, rejection.reason)
        reports = result.reports
        for start in range(0, len(reports), _APPLY_SLICE):
            if start:
                await asyncio.sleep(0)
            now = time.time()
            for report in reports[start : start + _APPLY_SLICE]:
                job_id = by_backend_id.get(report.backend_id)
                if job_id is None or job_id not in in_batch:
                    self._reject(job_id, "garbage", f"report for {report.backend_id!r}, which was not asked for")
                    continue
                if scheduler.apply_report(scheduler.jobs[job_id], report, "poll", op.op_id, now=now):
                    changed += 1
        return changed

    def _return_to_heap(self, op: Operation) -> None:
        """Schedule the batch's still-active jobs one interval from now (the hot path of a sweep)."""
        jobs, active, in_ops, due_at, heap = self._scheduler.jobs, self.active, self._in_ops, self._due_at, self._due
        mono, wall = time.monotonic(), time.time()
        earliest = heap[0][0] if heap else None
        by_due: dict[float, list[str]] = {}
        for job_id in op.job_ids:
            if job_id in active and not in_ops.get(job_id):
                due = due_at[job_id] = self._next_due(jobs[job_id], mono, wall)
                by_due.setdefault(due, []).append(job_id)
        for due, job_ids in by_due.items():
            heapq.heappush(heap, (due, next(self._seq), tuple(job_ids)))
        if heap and (earliest is None or heap[0][0] < earliest):
            self._wakeup.set()

    def on_push(self, report: StatusReport) -> None:
        """A change the backend noticed by itself (e.g. a process exit)."""
        job_id = self.by_backend_id.get(report.backend_id)
        if job_id is None:
            self._reject(None, "unknown_job", f"event for unknown {report.backend_id!r}")
            return
        job = self._scheduler.jobs[job_id]
        self._scheduler.apply_report(job, report, "event", None)
        if job_id in self._due_at:
            self.reschedule(job)

    async def _run_fetch(self, op: Operation) -> None:
        scheduler, sink = self._scheduler, self._scheduler.outputs
        (job_id,) = op.job_ids
        job = scheduler.jobs[job_id]
        if sink.collected(job_id):
            # Collected before a crash cut the bookkeeping short: do not fetch twice.
            self._finish(op, "done", changed=1)
            await scheduler.output_collected(job, _listing(sink.path(job_id)), op.op_id)
            return
        self.fetches_in_flight += 1
        self.fetches_total += 1
        self._start(op)
        staging = sink.prepare(job_id)
        try:
            outcome, _, error = await self._call(lambda: self.backend.fetch_output(job.backend_id or "", staging))
        except asyncio.CancelledError:
            self.fetches_in_flight -= 1
            sink.discard(staging)
            self._finish(op, "cancelled", error="shutting down")
            raise
        except OutputUnavailable as exc:
            self.fetches_in_flight -= 1
            sink.discard(staging)
            self._finish(op, "error", error=str(exc))
            scheduler.output_lost(job, str(exc), op.op_id)
            return
        self.fetches_in_flight -= 1
        if outcome != "done":
            assert error is not None
            sink.discard(staging)
            # A finished job's output must not be lost: keep retrying, ever more slowly.
            delay = backoff_delay(op.attempt, base=self._config.backoff_base, cap=self._config.fetch_backoff_cap)
            self._finish(op, outcome, error=error, retry_in=delay)
            self._retry_later(op, delay)
            return
        files = _listing(staging)
        sink.commit(job_id, staging)
        self._finish(op, "done", changed=1)
        await scheduler.output_collected(job, files, op.op_id)

    # -- shutdown ------------------------------------------------------------------------------

    def stop_planning(self) -> None:
        """Take no new work: planners stop, retries are not re-queued."""
        self._draining = True
        for handle in self._retry_timers:
            handle.cancel()
        self._retry_timers.clear()
        self._wakeup.set()

    async def wait_idle(self) -> None:
        """Wait until no call is in flight."""
        await self._idle.wait()


def _listing(directory: Path) -> tuple[str, ...]:
    return tuple(sorted(path.name for path in directory.iterdir()))
