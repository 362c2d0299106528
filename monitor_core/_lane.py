"""A lane: everything the scheduler does for one backend.

Active jobs wait in a due-time heap. The planner takes the jobs that are due (and those
due within a short window, to fill batches) and turns them into poll operations of at
most the backend's bulk size; "refresh now" requests become operations of their own at
the front of the queue. ``max_concurrency`` poll workers take them, each call under a
timeout that follows the latency the service shows (where a call can really be cut off: on
the loop or in a worker process), within the service's calls-per-minute allowance; failures
are retried with jittered backoff and feed the lane's circuit breaker. Output fetches are
the lane's other half, in :mod:`monitor_core._collecting`, and never take a poll's slot.

A lane sees the rest of the scheduler only through its :class:`LaneContext`: the book of
jobs, the bus's ``publish``, the settings and the clock. Nothing here raises into the
scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import heapq
import itertools
import logging
import math
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from ._book import Activate, Deactivate, Effect, JobBook
from ._breaker import CircuitBreaker
from ._clock import Clock
from ._collecting import URGENT, OutputCollection
from ._events import (
    BackendRecord,
    BreakerChanged,
    BreakerState,
    Event,
    OpFinished,
    OpQueued,
    OpRecord,
    OpStarted,
    RejectionCategory,
    Rescheduled,
    op_record,
)
from ._health import LaneHealth, LatencyWindow
from ._limiter import CallAllowance, CallKind
from ._model import Job, Operation, OpKind, OpState, Outcome
from ._outputs import OutputSink
from ._policy import AdaptiveInterval, backoff_delay
from ._settings import SchedulerConfig
from ._time_slice import TimeSlice
from .backends._base import (
    Backend,
    BackendError,
    MalformedAnswer,
    OutputUnavailable,
    PollResult,
    ServiceUnreachable,
    StatusReport,
)

__all__ = ["Lane", "LaneContext", "SchedulerConfig"]

log = logging.getLogger(__name__)

_LOCAL_DISK_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM})
"""Errors of this machine's disk, as opposed to a network's (``ConnectionError`` is an ``OSError`` too)."""
_TAIL_SAMPLES: Final = 20
"""Latencies needed before timeouts follow them."""
_RESERVE_SHARE_CAP: Final = 0.8
"""Status polls never keep more than this share of the allowance from fetches."""


@dataclass(frozen=True, slots=True)
class LaneContext:
    """What a lane may use of the scheduler: the book, the bus, the settings and the clock."""

    book: JobBook
    publish: Callable[[Event], None]
    settings: SchedulerConfig
    clock: Clock
    outputs: OutputSink
    policy: AdaptiveInterval
    apply_turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while an answer is applied: in a completion burst 16 answers of 500 jobs arrive
    together, and slices of each, all ready at once, added up to one long step of the loop."""


class Lane(OutputCollection):
    """The scheduling of one backend's monitoring calls (its output fetches: :class:`OutputCollection`)."""

    def __init__(self, backend: Backend, context: LaneContext) -> None:
        self.backend = backend
        self.name = backend.name
        self.caps = backend.capabilities
        self._context = context
        self._book = context.book
        self._clock = context.clock
        self._publish = context.publish
        self._settings = settings = context.settings
        self.base_interval = self.caps.poll_interval
        self.paused = False
        self._resumed = asyncio.Event()
        self._resumed.set()
        self.breaker = CircuitBreaker(
            # With c calls in flight, one bad moment of the service fails up to c of them at
            # once: "in a row" must span more than one round of calls, or a service that fails
            # only some calls keeps the lane shut (a grid failing half its calls opened the
            # breaker every few seconds and kept it open for most of a minute).
            threshold=max(settings.breaker_threshold, 2 * self.caps.max_concurrency),
            reset_after=settings.breaker_reset,
            reset_cap=settings.breaker_reset_cap,
            clock=self._clock.now,
            on_change=self._on_breaker_change,
        )
        self.health = LaneHealth()
        self.allowance = CallAllowance(self.caps.max_calls_per_minute)
        self.active: set[str] = set()
        """Ids of this lane's jobs whose backend is polled: the index the planner works from."""
        # Heap entries carry a whole batch's jobs: a sweep returns jobs to the heap hundreds at
        # a time with one due time, and heap operations per job were the planner's main cost.
        # ``_due_at`` is the truth; an entry's job whose ``_due_at`` differs is stale.
        self._due: list[tuple[float, int, tuple[str, ...]]] = []
        self._due_at: dict[str, float] = {}
        self._seq = itertools.count()
        self._in_ops: dict[str, int] = {}
        self._urgent: OrderedDict[str, None] = OrderedDict()
        """Jobs a user or Ganga asked to poll now, in the order asked; asked twice, polled once."""
        self._poll_queue: asyncio.PriorityQueue[tuple[int, int, Operation]] = asyncio.PriorityQueue()
        self.ops: dict[int, Operation] = {}
        """Every live operation, by id (a snapshot lists them)."""
        self._poll_ops: dict[int, Operation] = {}
        """The live polls alone: lag and health read them every sample, and fetches can number 100,000."""
        self._wakeup = asyncio.Event()
        self._draining = False
        self.in_flight = 0
        self.fetches_in_flight = 0
        self._applying = 0
        """Poll answers being believed (their call is over, so ``in_flight`` no longer counts them)."""
        self._idle = asyncio.Event()
        self._idle.set()
        self._retry_timers: set[asyncio.TimerHandle] = set()
        self._init_collection()
        # A backend's news about a job it has not been told of yet (its submission still returning).
        self._held: dict[str, tuple[float, list[StatusReport]]] = {}

    # -- compatibility views of the health counters ----------------------------------------------

    @property
    def calls_total(self) -> int:
        """Calls made (polls, fetches and their hedges)."""
        return self.health.calls_total

    @property
    def retries_total(self) -> int:
        """Attempts that will be, or were, tried again."""
        return self.health.retries_total

    @property
    def rejections_total(self) -> int:
        """Refused pieces of this backend's answers."""
        return self.health.rejections_total

    @property
    def fetches_total(self) -> int:
        """Output fetch calls made (hedges included)."""
        return self.health.fetches_total

    @property
    def lag_samples(self) -> deque[float]:
        """Status lag, one sample per publication."""
        return self.health.lag_samples

    @property
    def last_latency(self) -> float | None:
        """Latency of the last call that ended."""
        return self.health.last_latency

    # -- carrying out the book's effects -------------------------------------------------------

    def carry_out(self, effects: Iterable[Effect], *, announce: bool = True) -> None:
        """Do what a change in the book asks of this lane (``announce``: publish new due times)."""
        for effect in effects:
            if isinstance(effect, Activate):
                now = self._clock.now()
                due = now if effect.now else self._next_due(effect.job, now)
                self.activate(effect.job, due, announce=announce)
            elif isinstance(effect, Deactivate):
                self.deactivate(effect.job_id)
            else:
                self.queue_fetch(effect.job, urgent=effect.urgent)

    # -- the index of active jobs --------------------------------------------------------------

    def activate(self, job: Job, due: float, *, announce: bool = True) -> None:
        """Index an active job and make it due at monotonic time ``due``."""
        self.active.add(job.job_id)
        if self._schedule(job.job_id, due) and announce:
            self._announce(due, (job.job_id,))

    def activate_many(self, entries: Iterable[tuple[str, float]]) -> None:
        """Index many active jobs, each due at its monotonic time: one heap entry per due time."""
        active, in_ops, due_at = self.active, self._in_ops, self._due_at
        by_due: dict[float, list[str]] = {}
        for job_id, due in entries:
            active.add(job_id)
            if in_ops.get(job_id):
                continue
            due_at[job_id] = due
            members = by_due.get(due)
            if members is None:
                by_due[due] = [job_id]
            else:
                members.append(job_id)
        for due, job_ids in by_due.items():
            heapq.heappush(self._due, (due, next(self._seq), tuple(job_ids)))
        if by_due:
            self._wakeup.set()

    def deactivate(self, job_id: str) -> None:
        """Drop a job that needs no more polling (its heap entry goes stale)."""
        self.active.discard(job_id)
        self._due_at.pop(job_id, None)

    def _schedule(self, job_id: str, due: float) -> bool:
        if self._in_ops.get(job_id):
            return False
        self._due_at[job_id] = due
        heapq.heappush(self._due, (due, next(self._seq), (job_id,)))
        if due <= self._due[0][0]:
            self._wakeup.set()
        return True

    def _announce(self, due: float, job_ids: tuple[str, ...]) -> None:
        self._publish(
            Rescheduled(
                at=self._clock.wall_now(), backend=self.name, next_poll_at=self._clock.to_wall(due), job_ids=job_ids
            )
        )

    def interval(self, job: Job) -> float:
        """Seconds until ``job`` should be confirmed again (the adaptive interval)."""
        return self._context.policy.interval(
            job, self.base_interval, self._clock.wall_now(), self._book.groups.get(job.group)
        )

    def interval_at(self, job: Job, wall: float) -> float:
        """:meth:`interval` at a given wall-clock time (one clock reading for a batch of jobs)."""
        return self._context.policy.interval(job, self.base_interval, wall, self._book.groups.get(job.group))

    def _next_due(self, job: Job, now: float) -> float:
        return now + self.interval(job)

    def reschedule(self, job: Job) -> None:
        """Make an active job due one interval after now (it was just confirmed)."""
        if job.job_id in self.active:
            due = self._next_due(job, self._clock.now())
            if self._schedule(job.job_id, due):
                self._announce(due, (job.job_id,))

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
        jobs, clock = self._book.jobs, self._clock
        self._due.clear()
        by_due: dict[float, list[str]] = {}
        for job_id in list(self._due_at):
            job = jobs[job_id]
            due = self._due_at[job_id] = clock.to_monotonic(job.last_confirmed) + self.interval(job)
            by_due.setdefault(due, []).append(job_id)
        for due, job_ids in by_due.items():
            self._due.append((due, next(self._seq), tuple(job_ids)))
            self._announce(due, tuple(job_ids))
        heapq.heapify(self._due)
        self._wakeup.set()

    # -- lag and health ------------------------------------------------------------------------

    def lag(self, now: float) -> float:
        """How far past its due time the stalest active job is, in seconds."""
        oldest = self._peek_due()
        for op in self._poll_ops.values():
            if oldest is None or op.oldest_due < oldest:
                oldest = op.oldest_due
        return 0.0 if oldest is None else max(0.0, now - oldest)

    def calls_per_minute(self, now: float) -> float:
        """Calls started in the last minute."""
        return self.health.calls_per_minute(now)

    def record(self, now: float) -> BackendRecord:
        """The lane's health now."""
        health = self.health
        waiting = len(self._fetches) + self.fetches_in_flight
        rate = self._fetch_rate()
        return BackendRecord(
            name=self.name,
            active_jobs=len(self.active),
            queued_ops=sum(1 for op in self._poll_ops.values() if op.state == OpState.QUEUED)
            + len(self._fetch_ops)
            - self.fetches_in_flight,
            in_flight=self.in_flight,
            concurrency_limit=self.caps.max_concurrency,
            fetches_in_flight=self.fetches_in_flight,
            fetch_limit=self.fetch_limit.limit,
            max_batch=self.caps.max_batch,
            lag=self.lag(now),
            poll_interval=self.base_interval,
            breaker=self.breaker.state,
            paused=self.paused,
            calls_per_minute=health.calls_per_minute(now),
            max_calls_per_minute=self.caps.max_calls_per_minute,
            error_rate=health.error_rate,
            last_latency=health.last_latency,
            calls_total=health.calls_total,
            retries_total=health.retries_total,
            rejections_total=health.rejections_total,
            results_lag=self.results_lag(now),
            fetches_queued=len(self._fetches),
            collect_bound=0.0 if not waiting else (None if rate is None else waiting / rate),
        )

    def sample(self, now: float) -> BackendRecord:
        """The lane's health now, kept in its history; also the periodic upkeep of reserve and held news."""
        self._update_reserve()
        self._expire_held(now)
        record = self.record(now)
        self.health.lag_samples.append(record.lag)
        self.health.results_lag_samples.append(record.results_lag)
        return record

    def _update_reserve(self) -> None:
        """Keep for status calls what they are expected to need a minute, or used in the last one, with a margin.

        The expectation counts one call per batch per base interval; the adaptive policy polls
        fresh and nearly finished jobs faster, which the last minute's count catches.
        """
        limit = self.allowance.per_minute
        if limit is None:
            return
        batches = math.ceil(len(self.active) / max(1, self.caps.max_batch))
        expected = batches * 60.0 / max(self.base_interval, 1e-3)
        used = self.allowance.status_used(self._clock.now())
        reserve = max(float(self.caps.max_concurrency), self._settings.poll_reserve_margin * max(expected, used))
        self.allowance.reserve = min(limit * _RESERVE_SHARE_CAP, reserve)

    def op_records(self) -> list[OpRecord]:
        """Queued and in-flight operations, oldest first."""
        return [self.op_record(op) for op in self.ops_in_order()]

    def ops_in_order(self) -> list[Operation]:
        """Queued and in-flight operations, oldest first."""
        return sorted(self.ops.values(), key=lambda op: op.op_id)

    def op_record(self, op: Operation) -> OpRecord:
        """An operation as subscribers see it."""
        to_wall = self._clock.to_wall
        return op_record(
            op,
            enqueued_wall=to_wall(op.enqueued_at),
            started_wall=None if op.started_at is None else to_wall(op.started_at),
        )

    def _on_breaker_change(self, state: BreakerState, reason: str) -> None:
        log.warning("%s: circuit breaker %s (%s)", self.name, state, reason)
        self._publish(BreakerChanged(at=self._clock.wall_now(), backend=self.name, state=state, reason=reason))
        self._fetch_wakeup.set()

    # -- user requests ------------------------------------------------------------------------

    def refresh_now(self, job_id: str) -> None:
        """Poll this job ahead of everything queued."""
        self._urgent[job_id] = None
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
        self._fetch_wakeup.set()

    def set_interval(self, seconds: float) -> None:
        """Change the target interval between two confirmations of a job."""
        self.base_interval = seconds
        self.rebuild_due_times()

    # -- planning ------------------------------------------------------------------------------

    def _enqueue(self, op: Operation, *, again: bool = False) -> None:
        op.state = OpState.QUEUED
        if not again:
            op.enqueued_at = self._clock.now()
            self.ops[op.op_id] = op
            if op.kind == OpKind.POLL:
                self._poll_ops[op.op_id] = op
                for job_id in op.job_ids:
                    self._in_ops[job_id] = self._in_ops.get(job_id, 0) + 1
        if op.kind == OpKind.POLL:
            self._poll_queue.put_nowait((op.priority, op.op_id, op))
        enqueued_wall = self._clock.to_wall(op.enqueued_at)
        self._publish(OpQueued(at=self._clock.wall_now(), op=op_record(op, enqueued_wall=enqueued_wall)))

    def _plan_urgent(self, now: float, time_slice: TimeSlice) -> bool:
        """Batch the jobs asked for now until the slice is spent; return True when some are left for another round.

        Ganga's Local wrappers ending, a split job's subjobs each, can ask for many jobs at
        once: planned in one step, 100,000 held the loop 49 ms on an idle machine.
        """
        urgent, active, due_at, max_batch = self._urgent, self.active, self._due_at, self.caps.max_batch
        while urgent:
            batch: list[str] = []
            while urgent and len(batch) < max_batch:
                job_id, _ = urgent.popitem(last=False)
                if job_id in active:
                    due_at.pop(job_id, None)
                    batch.append(job_id)
            if batch:
                self._enqueue(Operation(OpKind.POLL, self.name, tuple(batch), priority=URGENT, oldest_due=now))
            if urgent and time_slice.spent():
                return True
        return False

    def _plan_due(self, now: float, time_slice: TimeSlice) -> bool:
        """Batch the due jobs until the slice is spent; return True when some are left for another round."""
        first = self._peek_due()
        if first is None or first > now:
            return False
        horizon = now + min(self._settings.batch_window, self.base_interval / 4)
        heap, due_at, max_batch = self._due, self._due_at, self.caps.max_batch
        batch: list[str] = []
        oldest = first
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
                    batch = []
                    if time_slice.spent():
                        if index + 1 < len(job_ids):
                            heapq.heappush(heap, (due, seq, job_ids[index + 1 :]))
                        return True
        if batch:
            self._enqueue(Operation(OpKind.POLL, self.name, tuple(batch), oldest_due=oldest))
        return False

    async def run_planner(self) -> None:
        """Turn due jobs into poll operations, forever."""
        # A large backlog (100,000 jobs just submitted) is planned a slice at a time: 2,000
        # jobs a round took 5-8 ms of the loop on a loaded machine.
        time_slice = TimeSlice(check_every=1)
        while True:
            self._wakeup.clear()
            now = self._clock.now()
            if self._urgent and self._plan_urgent(now, time_slice):
                await time_slice.yield_to_loop()
                continue
            if not self.paused and not self._draining and self._plan_due(now, time_slice):
                await time_slice.yield_to_loop()
                continue
            due = self._peek_due()
            timeout = None if due is None or self.paused else max(0.0, due - self._clock.now())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
            time_slice.restart()

    # -- the allowance -------------------------------------------------------------------------

    async def take_call(self, kind: CallKind = "status") -> None:
        """Wait until one more call of this kind keeps within the service's allowance, and count it.

        Status calls (polls, submissions, kills) may use the whole allowance; fetches only what
        status calls are not expected to need.
        """
        allowance, clock = self.allowance, self._clock
        # The allowance frees up with time alone (calls leave the sliding minute), not on an event.
        while not allowance.take(kind, clock.now()):  # noqa: ASYNC110
            await asyncio.sleep(allowance.wait_time(kind, clock.now()))

    async def take_direct_call(self) -> None:
        """Make room for a call outside the lane's operations (a submission, a kill) and count it in its health."""
        await self.take_call("status")
        self.health.call_started(self._clock.now())

    # -- running polls -------------------------------------------------------------------------

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
            await self.take_call("status")
            # The breaker is asked right before the call: it may have opened while we waited.
            trial = await self.breaker.acquire()
            await self._run_poll(op, trial=trial)

    def _start(self, op: Operation) -> None:
        now = self._clock.now()
        op.state = OpState.IN_FLIGHT
        op.started_at = now
        self.health.call_started(now)
        self._idle.clear()
        self._publish(OpStarted(at=self._clock.to_wall(now), op_id=op.op_id, backend=self.name, attempt=op.attempt))

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
    ) -> float:
        now = self._clock.now()
        latency = (answered_at or now) - (op.started_at or now)
        self.health.call_finished(latency, None if outcome == "cancelled" else outcome == "done")
        op.error = error
        if retry_in is None:
            op.state = (
                OpState.DONE if outcome == "done" else OpState.CANCELLED if outcome == "cancelled" else OpState.FAILED
            )
            op.finished_at = now
            self.ops.pop(op.op_id, None)
            if op.kind == OpKind.POLL:
                self._poll_ops.pop(op.op_id, None)
                for job_id in op.job_ids:
                    left = self._in_ops.get(job_id, 1) - 1
                    if left <= 0:
                        self._in_ops.pop(job_id, None)
                    else:
                        self._in_ops[job_id] = left
            else:
                self._fetch_ops.pop(op.job_ids[0], None)
        self._publish(
            OpFinished(
                at=self._clock.to_wall(now),
                op_id=op.op_id,
                backend=self.name,
                kind=op.kind,
                outcome=outcome,
                latency=latency,
                error=error,
                retry_in=retry_in,
                changed=changed,
                detail=detail,
            )
        )
        self._check_idle()
        return latency

    def _check_idle(self) -> None:
        if self.in_flight == 0 and self.fetches_in_flight == 0 and self._applying == 0:
            self._idle.set()

    def _retry_later(self, op: Operation, delay: float, requeue: Callable[[], None]) -> None:
        self.health.retries_total += 1
        op.attempt += 1
        op.state = OpState.QUEUED

        def fire() -> None:
            self._retry_timers.discard(handle)
            if op.op_id in self.ops:
                requeue()

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._retry_timers.add(handle)

    async def _call(
        self, call: Callable[[], Awaitable[object]], timeout_s: float | None = None, *, writes_locally: bool = False
    ) -> tuple[Outcome, object, str | None]:
        """Run one backend call under a timeout (the backend's own unless given).

        Returns:
            The outcome, the call's result, and the error if it failed. The result of a call that
            reached no service is the :class:`ServiceUnreachable` it raised.

        Raises:
            OutputUnavailable: passed through for the fetch path to settle the job.
            OSError: with ``writes_locally``, a fault of this machine's disk (full, read-only,
                I/O or permission error), which is no fault of the backend's.
            asyncio.CancelledError: the lane is shutting down.
        """
        limit = self.caps.call_timeout if timeout_s is None else timeout_s
        timeout = asyncio.timeout(limit)
        try:
            async with timeout:
                result = await call()
        except TimeoutError:
            if timeout.expired():
                return "timeout", None, f"no answer within {limit:.3g}s"
            return "error", None, "TimeoutError raised by the backend"
        except MalformedAnswer as exc:
            self._reject(None, "garbage", str(exc))
            return "error", None, f"malformed answer: {exc}"
        except OutputUnavailable:
            raise
        except OSError as exc:
            if writes_locally and exc.errno in _LOCAL_DISK_ERRNOS:
                raise
            return "error", None, f"{type(exc).__name__}: {exc}"
        except ServiceUnreachable as exc:
            return "error", exc, str(exc)
        except BackendError as exc:
            return "error", None, str(exc)
        except Exception as exc:
            log.exception("%s: backend raised unexpectedly", self.name)
            return "error", None, f"{type(exc).__name__}: {exc}"
        return "done", result, None

    def _reject(self, job_id: str | None, category: RejectionCategory, reason: str) -> None:
        self.health.rejections_total += 1
        self._book.reject(self.name, job_id, category, reason)

    async def _run_poll(self, op: Operation, *, trial: bool) -> None:
        self.in_flight += 1
        self._start(op)
        jobs = self._book.jobs
        backend_ids = [jobs[j].backend_id or "" for j in op.job_ids]
        try:
            outcome, result, error = await self._call(lambda: self.backend.poll(backend_ids), self._poll_timeout())
        except asyncio.CancelledError:
            self.in_flight -= 1
            self.breaker.release(trial=trial)
            self._finish(op, "cancelled", error="shutting down")
            raise
        self.in_flight -= 1
        answered_at = self._clock.now()
        if outcome == "done":
            assert isinstance(result, PollResult)
            self.breaker.record_success(trial=trial)
            # Counted, so that another call ending meanwhile does not make the lane look idle.
            self._applying += 1
            try:
                changed = await self._apply_poll(op, result)
            finally:
                self._applying -= 1
            latency = self._finish(op, "done", changed=changed, detail=result.detail, answered_at=answered_at)
            self.health.poll_latency.add(latency)
            self._return_to_heap(op, asked_at=op.started_at)
            return
        assert error is not None
        self.breaker.record_failure(error, trial=trial)
        if op.attempt <= self._settings.max_retries and not self._draining:
            delay = backoff_delay(op.attempt, base=self._settings.backoff_base, cap=self._settings.backoff_cap)
            self._finish(op, outcome, error=error, retry_in=delay)
            self._retry_later(op, delay, lambda: self._enqueue(op, again=True))
        else:
            self._finish(op, outcome, error=error)
            self._return_to_heap(op)

    async def _apply_poll(self, op: Operation, result: PollResult) -> int:
        """Believe what a poll answered: one answer at a time, a couple of milliseconds at a time.

        A burst of big answers so never stalls the loop.
        """
        book, clock = self._book, self._clock
        by_backend_id, jobs = book.by_backend_id[self.name], book.jobs
        in_batch = set(op.job_ids)
        transitions_before = book.transitions
        for rejection in result.rejections:
            self._reject(by_backend_id.get(rejection.backend_id or ""), rejection.category, rejection.reason)
        reports = result.reports
        if not reports:
            return book.transitions - transitions_before
        async with self._context.apply_turn:
            time_slice = TimeSlice()
            now = clock.wall_now()
            for report in reports:
                if time_slice.spent():
                    await time_slice.yield_to_loop()
                    now = clock.wall_now()
                job_id = by_backend_id.get(report.backend_id)
                if job_id is None or job_id not in in_batch:
                    self._reject(job_id, "garbage", f"report for {report.backend_id!r}, which was not asked for")
                    continue
                effects = book.apply(jobs[job_id], report, "poll", op.op_id, now)
                if effects:
                    self.carry_out(effects)
        return book.transitions - transitions_before

    def _return_to_heap(self, op: Operation, *, asked_at: float | None = None) -> None:
        """Schedule the batch's still-active jobs one interval on (the hot path of a sweep).

        An answer tells each job's state when the question was sent (``asked_at``), so the next
        question is due one interval after that, not after the answer: a job that ends just
        after a poll is sent is then seen within one interval plus one call, not plus two.
        Without an answer (the call failed) the interval counts from now.
        """
        jobs, active, in_ops, due_at, heap = self._book.jobs, self.active, self._in_ops, self._due_at, self._due
        now = self._clock.now()
        wall = self._clock.to_wall(now)
        since = now if asked_at is None else min(asked_at, now)
        policy, base, groups = self._context.policy, self.base_interval, self._book.groups
        earliest = heap[0][0] if heap else None
        # A lane already behind has no calls to spare for polling some jobs sooner than the
        # base interval: that would only push the stalest ones further back.
        oldest = self._peek_due()
        floor = base if oldest is not None and now - oldest > base / 4 else 0.0
        by_due: dict[float, list[str]] = {}
        for job_id in op.job_ids:
            if job_id in active and not in_ops.get(job_id):
                job = jobs[job_id]
                due = due_at[job_id] = since + max(floor, policy.interval(job, base, wall, groups.get(job.group)))
                members = by_due.get(due)
                if members is None:
                    by_due[due] = [job_id]
                else:
                    members.append(job_id)
        for due, job_ids in by_due.items():
            batch = tuple(job_ids)
            heapq.heappush(heap, (due, next(self._seq), batch))
            self._announce(due, batch)
        if heap and (earliest is None or heap[0][0] < earliest):
            self._wakeup.set()

    # -- news the backend pushes ---------------------------------------------------------------

    def on_push(self, report: StatusReport) -> None:
        """A change the backend noticed by itself (e.g. a process exit).

        News about a job the lane does not know yet is held: the backend may see a job end
        before its submission has returned the job's id to the scheduler.
        """
        job = self._book.find(self.name, report.backend_id)
        if job is None:
            held = self._held.get(report.backend_id)
            if held is None:
                self._held[report.backend_id] = (self._clock.now(), [report])
            else:
                held[1].append(report)
            return
        self._apply_pushed(job, report)

    def _apply_pushed(self, job: Job, report: StatusReport) -> None:
        self.carry_out(self._book.apply(job, report, "event", None, self._clock.wall_now()))
        if job.job_id in self._due_at:
            self.reschedule(job)

    @property
    def holds_news(self) -> bool:
        """True while the backend's news about jobs not tracked yet waits for them."""
        return bool(self._held)

    def on_tracked(self, job: Job) -> None:
        """A job joined the book: apply what its backend said of it before that."""
        if job.backend_id is None or not self._held:
            return
        held = self._held.pop(job.backend_id, None)
        if held is not None:
            for report in held[1]:
                self._apply_pushed(job, report)

    def _expire_held(self, now: float) -> None:
        if not self._held:
            return
        for backend_id, (since, reports) in list(self._held.items()):
            if now - since > self._settings.held_push_for:
                del self._held[backend_id]
                for _ in reports:
                    self._reject(None, "unknown_job", f"event for unknown {backend_id!r}")

    # -- output fetches ------------------------------------------------------------------------

    def _timeout(self, latencies: LatencyWindow) -> float:
        """A multiple of the recent p99 latency, within bounds; the backend's own timeout until known."""
        ceiling = self.caps.call_timeout
        if len(latencies) < _TAIL_SAMPLES:
            return ceiling
        p99 = latencies.quantile(0.99) or ceiling
        settings = self._settings
        return min(ceiling, max(settings.timeout_min, settings.timeout_multiple * p99))

    def _poll_timeout(self) -> float:
        # A blocking call on a thread cannot be stopped: cut short, it would keep its thread
        # busy behind the lane's back. Only calls on the loop or in a worker process follow latency.
        if self.caps.blocking and not self.caps.isolated:
            return self.caps.call_timeout
        return self._timeout(self.health.poll_latency)

    # -- shutdown ------------------------------------------------------------------------------

    def stop_planning(self) -> None:
        """Take no new work: planners stop, retries are not re-queued."""
        self._draining = True
        for handle in self._retry_timers:
            handle.cancel()
        self._retry_timers.clear()
        self._wakeup.set()
        self._fetch_wakeup.set()

    async def wait_idle(self) -> None:
        """Wait until no call is in flight."""
        await self._idle.wait()
