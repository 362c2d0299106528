"""The operation queue over the one fold: queued and in-flight operations, the recently finished fading out.

The fold holds what is queued or running; this view adds what a person wants to see of it:
finished operations for a few seconds, a log of them for job details, and each job's errors.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from itertools import chain, islice
from typing import Final

from monitor_core import OpFinished, OpRecord, OpStarted, Snapshot

from ..job_rows import OpView

__all__ = ["OpsView"]

FADE_SECONDS: Final = 3.0
"""How long a finished operation stays in the queue view, fading."""
_OP_LOG: Final = 5_000
"""Operations remembered for job details: a minute of a fetch flood at 100,000 jobs. A detail
looks through them for its job's (1 ms); 20,000 of them held 5 MB and took 4 ms to look through."""
_PER_JOB_OPS: Final = 12
_PER_JOB_ERRORS: Final = 12


class OpsView:
    """Operations for the queue panel and job details.

    An operation that only waits is kept as the record it was queued with, the very object the
    fold holds; a view of it is made when it moves (starts, finishes, is queued again) or is
    shown. In a flood of fetches, 70,000 wait at once and the panel shows eighty: a view each
    cost 305 bytes a job at 100,000 jobs.
    """

    def __init__(self) -> None:
        self._waiting: dict[int, OpRecord | OpView] = {}
        """Operations not finished, oldest first (they arrive in the order they were queued)."""
        self._finished: dict[int, OpView] = {}
        """Operations finished and still fading, in the order they finished."""
        self.ops: Mapping[int, OpView] = _Operations(self._waiting, self._finished, self._view)
        """Queued, in-flight and recently finished operations."""
        self.live_states: Counter[str] = Counter()
        """Operations not finished, per state (queued, in_flight, retrying)."""
        self._log: OrderedDict[int, OpRecord | OpView] = OrderedDict()
        self.op_log: Mapping[int, OpView] = _Log(self._log)
        """The last operations queued, finished or not, for job details."""
        self.ops_of: Mapping[str, tuple[int, ...]] = _OpsOfJobs(self._log)
        """The last operations of the log that asked about each job."""
        self.errors: dict[str, deque[str]] = {}
        """The last errors and rejections about each job."""
        self.generation = 0

    def reset(self, snapshot: Snapshot) -> None:
        """Start the queue over from a snapshot's operations; the log and errors stay."""
        self._waiting.clear()
        self._finished.clear()
        self.live_states = Counter()
        for op in sorted(snapshot.ops, key=lambda op: (op.enqueued_at, op.op_id)):
            self.queued(op)
        self.generation += 1

    def queued(self, record: OpRecord) -> None:
        view = self._view(record.op_id)
        if view is None:
            self._waiting[record.op_id] = record
            self.live_states[str(record.state)] += 1
            self._log[record.op_id] = record
            while len(self._log) > _OP_LOG:
                self._log.popitem(last=False)
        else:
            self._move(view, "queued", None)
            view.attempt = record.attempt
            view.version += 1
        self.generation += 1

    def started(self, event: OpStarted) -> OpView | None:
        view = self._view(event.op_id)
        if view is None:
            return None
        self._move(view, "in_flight", view.finished_at)
        view.started_at = event.at
        view.attempt = event.attempt
        view.version += 1
        self.generation += 1
        return view

    def finished(self, event: OpFinished) -> OpView | None:
        view = self._view(event.op_id)
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

    def _view(self, op_id: int) -> OpView | None:
        """The view of a known operation, made (and kept in its place) if it was only waiting."""
        finished = self._finished.get(op_id)
        if finished is not None:
            return finished
        waiting = self._waiting.get(op_id)
        if waiting is None or isinstance(waiting, OpView):
            return waiting
        view = _view_of(waiting)
        self._waiting[op_id] = view
        if op_id in self._log:
            self._log[op_id] = view
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
        """Every operation of the queue view: oldest first.

        Views of operations that only wait are made for the call and not kept.
        """
        views = [_view_of(op) if isinstance(op, OpRecord) else op for op in self._waiting.values()]
        return sorted(chain(views, self._finished.values()), key=lambda view: (view.enqueued_at, view.op_id))

    def shown(self, limit: int) -> list[OpView]:
        """The first ``limit`` rows of the queue view: waiting oldest first, then the newest finished.

        Costs the rows shown, not the queue: thousands of queued fetches in a flood are not sorted
        on each repaint to show eighty.
        """
        rows = [view for op_id in list(islice(self._waiting, limit)) if (view := self._view(op_id)) is not None]
        if len(rows) < limit:
            rows += islice(reversed(self._finished.values()), limit - len(rows))
        return rows


def _view_of(record: OpRecord) -> OpView:
    return OpView(
        op_id=record.op_id,
        kind=record.kind,
        backend=record.backend,
        job_ids=record.job_ids,
        enqueued_at=record.enqueued_at,
        attempt=record.attempt,
        started_at=record.started_at,
        state=str(record.state),
    )


class _Operations(Mapping[int, OpView]):
    """The queue view's operations by id: waiting, then finished and fading."""

    def __init__(
        self,
        waiting: dict[int, OpRecord | OpView],
        finished: dict[int, OpView],
        view_of: Callable[[int], OpView | None],
    ) -> None:
        self._waiting = waiting
        self._finished = finished
        self._view_of = view_of

    def __getitem__(self, op_id: int) -> OpView:
        view = self._view_of(op_id)
        if view is None:
            raise KeyError(op_id)
        return view

    def __contains__(self, op_id: object) -> bool:
        return op_id in self._waiting or op_id in self._finished

    def __iter__(self) -> Iterator[int]:
        return chain(self._waiting, self._finished)

    def __len__(self) -> int:
        return len(self._waiting) + len(self._finished)


class _Log(Mapping[int, OpView]):
    """The operations log by id; an operation that never moved is read from the record it was queued with."""

    def __init__(self, log: OrderedDict[int, OpRecord | OpView]) -> None:
        self._log = log

    def __getitem__(self, op_id: int) -> OpView:
        entry = self._log[op_id]
        return _view_of(entry) if isinstance(entry, OpRecord) else entry

    def __contains__(self, op_id: object) -> bool:
        return op_id in self._log

    def __iter__(self) -> Iterator[int]:
        return iter(self._log)

    def __len__(self) -> int:
        return len(self._log)


class _OpsOfJobs(Mapping[str, tuple[int, ...]]):
    """The last operations of the log that asked about each job, oldest first: looked up when asked.

    Only a job's detail asks, for one job at a time, and a look through the operations of the
    log takes about a millisecond. Kept up to date for every job as operations came, the
    lists cost 100 bytes a job at 100,000 jobs.
    """

    def __init__(self, log: OrderedDict[int, OpRecord | OpView]) -> None:
        self._log = log

    def __getitem__(self, job_id: str) -> tuple[int, ...]:
        found = [op_id for op_id, entry in self._log.items() if job_id in entry.job_ids]
        if not found:
            raise KeyError(job_id)
        return tuple(found[-_PER_JOB_OPS:])

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(chain.from_iterable(entry.job_ids for entry in self._log.values())))

    def __len__(self) -> int:
        return sum(1 for _ in self)
