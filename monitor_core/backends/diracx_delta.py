"""What the ``diracx`` backend believes of each job, kept current by full reads and delta reads.

A *full read* asks DiracX for named jobs (``JobID in [...]``). A *delta read* asks for every
job of the user whose ``LastUpdateTime`` is after a horizon: what changed since the last
delta began. Deltas form an unbroken chain from the first read on, so a job the cache holds
and no delta mentions has not changed, and the cache may confirm it.

Why the chain misses nothing:

* The horizon of the next delta is the (service-clock) start of the last delta that
  succeeded, minus ``margin``. ``margin`` covers the error of our estimate of the service's
  clock, and updates in flight: DiracX stamps ``LastUpdateTime`` when it handles an update
  and commits a moment later, so a row may become visible with a time before the start of
  a delta that did not see it.
* DiracX compares datetimes at whole seconds (``gt S`` means "from the second after S"), so
  the horizon is floored and one second is taken off.
* Rows merge by their own ``LastUpdateTime``: an older row (an earlier, overlapping read that
  finished late) never replaces a newer one, so reads may overlap and finish in any order.
* ``LastUpdateTime`` only grows, so a job leaves no page of an ``asc JobID`` delta while it is
  being paged through; a row may be seen twice, never skipped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from .._events import RejectionCategory
from ._base import Rejection, StatusReport
from .diracx_states import DIRACX_STATUS_MAPPING, is_reachable

__all__ = [
    "STATUS_PARAMETERS",
    "JobState",
    "StatusCache",
    "format_since",
    "parse_row",
    "parse_time",
]

STATUS_PARAMETERS: Final = ("JobID", "Status", "MinorStatus", "ApplicationStatus", "LastUpdateTime")
"""The columns a status read asks for: nothing else crosses the wire."""


@dataclass(frozen=True, slots=True)
class JobState:
    """One job's status as DiracX last reported it, and when DiracX last changed it."""

    status: str
    minor: str
    application: str
    updated: float
    """``LastUpdateTime``, seconds since the epoch on the service's clock."""

    def report(self, backend_id: str) -> StatusReport:
        minor = self.minor if self.minor and self.minor != "Unknown" else ""
        info = f"{self.status}: {minor}" if minor else self.status
        return StatusReport(backend_id, DIRACX_STATUS_MAPPING[self.status], info)


def parse_time(text: Any) -> float:
    """A DiracX timestamp (ISO 8601, UTC, ``Z`` or no zone) as epoch seconds.

    Raises:
        ValueError: not a timestamp.
    """
    if not isinstance(text, str):
        raise ValueError(f"not a timestamp: {text!r:.40}")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def format_since(horizon: float) -> str:
    """The ``LastUpdateTime gt`` value that returns every row stamped at or after ``horizon``.

    DiracX matches whole seconds: ``gt S`` is "at or after S + 1 s".
    """
    second = math.floor(horizon) - 1
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def parse_row(row: Any) -> tuple[int, JobState] | Rejection:
    """A search result row as (job id, state), or why it was refused."""
    if not isinstance(row, Mapping):
        return Rejection(None, "garbage", f"row is not a record: {row!r:.80}")
    job_id = row.get("JobID")
    if not isinstance(job_id, int) or isinstance(job_id, bool):
        return Rejection(None, "garbage", f"row without a job id: {row!r:.80}")
    status = row.get("Status")
    if not isinstance(status, str):
        return Rejection(str(job_id), "garbage", f"row without a status: {row!r:.80}")
    if status not in DIRACX_STATUS_MAPPING:
        return Rejection(str(job_id), "unknown_state", f"unknown DiracX status {status!r:.40}")
    try:
        updated = parse_time(row.get("LastUpdateTime"))
    except ValueError as exc:
        return Rejection(str(job_id), "garbage", f"bad LastUpdateTime: {exc}")
    minor, application = row.get("MinorStatus"), row.get("ApplicationStatus")
    return job_id, JobState(
        status,
        minor if isinstance(minor, str) else "",
        application if isinstance(application, str) else "",
        updated,
    )


class StatusCache:
    """The jobs' last known DiracX states, and the horizon the next delta read starts from.

    Args:
        margin: seconds the horizon is moved back (clock-skew estimate error + in-flight
            updates). Larger misses less under a slow or skewed service; smaller sends less.
        full_every: one poll in this many reads a job in full (1: every poll does).
    """

    def __init__(self, *, margin: float = 5.0, full_every: int = 10) -> None:
        if margin < 0 or full_every < 1:
            raise ValueError("margin must be >= 0 and full_every >= 1")
        self.margin = margin
        self.full_every = full_every
        self.states: dict[int, JobState] = {}
        self.tracked: set[int] = set()
        self._polls_since_full: dict[int, int] = {}
        self.horizon: float | None = None
        """Service-clock start of the last delta that succeeded (or of the first read)."""
        self.stale_rows = 0
        self.foreign_rows = 0

    # -- planning --------------------------------------------------------------------------------

    def track(self, job_ids: Iterable[int]) -> None:
        self.tracked.update(job_ids)

    def forget(self, job_id: int) -> None:
        self.tracked.discard(job_id)
        self.states.pop(job_id, None)
        self._polls_since_full.pop(job_id, None)

    def split(self, job_ids: Iterable[int]) -> tuple[list[int], list[int]]:
        """Which of these jobs need a full read, and which a delta can confirm."""
        full, delta = [], []
        for job_id in job_ids:
            if (
                self.horizon is None
                or job_id not in self.states
                or self._polls_since_full.get(job_id, self.full_every) >= self.full_every - 1
            ):
                full.append(job_id)
            else:
                delta.append(job_id)
        return full, delta

    def since(self) -> float:
        """The horizon the next delta asks from (call only once a read has begun)."""
        assert self.horizon is not None
        return self.horizon - self.margin

    def read_started(self, service_now: float) -> None:
        """A read began: the first one opens the delta chain."""
        if self.horizon is None:
            self.horizon = service_now

    def delta_succeeded(self, started: float) -> None:
        """A delta that began at ``started`` (service clock) answered in full."""
        if self.horizon is None or started > self.horizon:
            self.horizon = started

    # -- merging ---------------------------------------------------------------------------------

    def merge(self, rows: Iterable[Any], *, full: bool) -> list[Rejection]:
        """Take rows of a read; refuse garbage, unknown statuses and moves DIRAC forbids."""
        rejections: list[Rejection] = []
        for row in rows:
            parsed = parse_row(row)
            if isinstance(parsed, Rejection):
                rejections.append(parsed)
                continue
            job_id, state = parsed
            if job_id not in self.tracked:
                self.foreign_rows += 1  # the user's other jobs
                continue
            if full:
                self._polls_since_full[job_id] = 0
            known = self.states.get(job_id)
            if known is not None:
                if state.updated < known.updated or (state.updated == known.updated and state == known):
                    self.stale_rows += 1
                    continue
                if not is_reachable(known.status, state.status):
                    rejections.append(
                        Rejection(
                            str(job_id),
                            _BACKWARDS,
                            f"DiracX status went back: {known.status} -> {state.status} (DIRAC forbids it)",
                        )
                    )
                    continue
            self.states[job_id] = state
        return rejections

    def answer(
        self, job_ids: Iterable[int], *, confirmed_by_delta: set[int]
    ) -> tuple[list[StatusReport], list[Rejection]]:
        """Reports for the asked jobs; a job a read did not return is refused as unknown."""
        reports: list[StatusReport] = []
        rejections: list[Rejection] = []
        for job_id in job_ids:
            state = self.states.get(job_id)
            if state is None:
                rejections.append(Rejection(str(job_id), "unknown_job", "DiracX does not know this job"))
                continue
            if job_id in confirmed_by_delta:
                self._polls_since_full[job_id] = self._polls_since_full.get(job_id, 0) + 1
            reports.append(state.report(str(job_id)))
        return reports, rejections


_BACKWARDS: Final[RejectionCategory] = "illegal_transition"


def service_now(skew: float) -> float:
    """Our estimate of the service's clock."""
    return time.time() + skew
