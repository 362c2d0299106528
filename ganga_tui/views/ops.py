"""The operation queue over the one fold: queued and in-flight operations, the recently finished fading out.

The fold holds what is queued or running; this view adds what a person wants to see of it:
finished operations for a few seconds, a log of them for job details, and each job's errors.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from itertools import islice
from typing import Final

from monitor_core import OpFinished, OpRecord, OpStarted, Snapshot

from ..job_rows import OpView

__all__ = ["OpsView"]

FADE_SECONDS: Final = 3.0
"""How long a finished operation stays in the queue view, fading."""
_OP_LOG: Final = 20_000
"""Finished operations remembered for job details."""
_PER_JOB_OPS: Final = 12
_PER_JOB_ERRORS: Final = 12


class OpsView:
    """Operations for the queue panel and job details."""

    def __init__(self) -> None:
        self.ops: dict[int, OpView] = {}
        """Queued, in-flight and recently finished operations."""
        self._waiting: dict[int, OpView] = {}
        """Operations not finished, oldest first (they arrive in the order they were queued)."""
        self._finished: dict[int, OpView] = {}
        """Operations finished and still fading, in the order they finished."""
        self.live_states: Counter[str] = Counter()
        """Operations not finished, per state (queued, in_flight, retrying)."""
        self.op_log: OrderedDict[int, OpView] = OrderedDict()
        self.ops_of: dict[str, tuple[int, ...]] = {}
        """The last operations that asked about each job."""
        self.errors: dict[str, deque[str]] = {}
        """The last errors and rejections about each job."""
        self.generation = 0

    def reset(self, snapshot: Snapshot) -> None:
        """Start the queue over from a snapshot's operations; the log and errors stay."""
        self.ops = {}
        self._waiting = {}
        self._finished = {}
        self.live_states = Counter()
        for op in sorted(snapshot.ops, key=lambda op: (op.enqueued_at, op.op_id)):
            self.queued(op)
        self.generation += 1

    def queued(self, record: OpRecord) -> OpView:
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
            self._waiting[record.op_id] = view
            self.live_states[view.state] += 1
            self.op_log[view.op_id] = view
            while len(self.op_log) > _OP_LOG:
                self.op_log.popitem(last=False)
            for job_id in record.job_ids:
                self.touch(job_id, record.op_id)
        else:
            self._move(view, "queued", None)
            view.attempt = record.attempt
            view.version += 1
        self.generation += 1
        return view

    def started(self, event: OpStarted) -> OpView | None:
        view = self.ops.get(event.op_id)
        if view is None:
            return None
        self._move(view, "in_flight", view.finished_at)
        view.started_at = event.at
        view.attempt = event.attempt
        view.version += 1
        self.generation += 1
        return view

    def finished(self, event: OpFinished) -> OpView | None:
        view = self.ops.get(event.op_id)
        if view is None:
            return None
        view.latency = event.latency
        view.error = event.error
        view.detail = event.detail
        view.changed = event.changed
        view.version += 1
        if event.retry_in is not None:
            self._move(view, "retrying", view.finished_at)
        else:
            self._move(view, "done" if event.outcome == "done" else event.outcome, event.at)
        if event.error:
            for job_id in view.job_ids:
                self.error(job_id, f"{view.kind} op {view.op_id} {event.outcome}: {event.error}", event.at)
        self.generation += 1
        return view

    def _move(self, view: OpView, state: str, finished_at: float | None) -> None:
        """Change an operation's state, keeping the waiting and finished orders and the counts."""
        if not view.finished:
            self.live_states[view.state] -= 1
        view.state = state
        view.finished_at = finished_at
        if view.finished:
            self._waiting.pop(view.op_id, None)
            self._finished.pop(view.op_id, None)
            self._finished[view.op_id] = view
        else:
            self.live_states[state] += 1
            self._finished.pop(view.op_id, None)
            # Queued again after it finished (rare): it rejoins at the end.
            self._waiting.setdefault(view.op_id, view)

    def touch(self, job_id: str, op_id: int) -> None:
        # A tuple rebuilt on each touch, not a list or a deque: no spare capacity per job
        # (at 100,000 jobs an empty deque each costs 60 MB, a list of three 9 MB more).
        ops = self.ops_of.get(job_id)
        if ops is None:
            self.ops_of[job_id] = (op_id,)
        elif op_id not in ops:
            self.ops_of[job_id] = (*ops[1:], op_id) if len(ops) >= _PER_JOB_OPS else (*ops, op_id)

    def error(self, job_id: str, text: str, at: float) -> None:
        errors = self.errors.get(job_id)
        if errors is None:
            errors = self.errors[job_id] = deque(maxlen=_PER_JOB_ERRORS)
        errors.append(f"{at:.3f} {text}")

    def expire(self, now: float) -> bool:
        """Forget operations that finished more than the fade time ago; True if any went."""
        # Oldest finished first: stop at the first still fading, whatever the queue's length.
        gone: list[int] = []
        for op_id, view in self._finished.items():
            if view.finished_at is not None and now - view.finished_at <= FADE_SECONDS:
                break
            gone.append(op_id)
        for op_id in gone:
            del self.ops[op_id]
            del self._finished[op_id]
        if gone:
            self.generation += 1
        return bool(gone)

    @staticmethod
    def fade(view: OpView, now: float) -> float:
        """How far a finished operation has faded, 0 (just finished) to 1 (about to go)."""
        if view.finished_at is None:
            return 0.0
        return min(1.0, max(0.0, (now - view.finished_at) / FADE_SECONDS))

    def live(self) -> list[OpView]:
        """Every operation of the queue view: oldest first."""
        return sorted(self.ops.values(), key=lambda view: (view.enqueued_at, view.op_id))

    def shown(self, limit: int) -> list[OpView]:
        """The first ``limit`` rows of the queue view: waiting oldest first, then the newest finished.

        Costs the rows shown, not the queue: thousands of queued fetches in a flood are not sorted
        on each repaint to show eighty.
        """
        rows = list(islice(self._waiting.values(), limit))
        if len(rows) < limit:
            rows += islice(reversed(self._finished.values()), limit - len(rows))
        return rows
