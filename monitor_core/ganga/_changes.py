"""What the hooks report from inside Ganga: status changes and Ganga's own monitoring calls.

These records are made on Ganga's threads, so they hold only plain values, never Ganga objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from .._events import ChangeSource
from .._model import Job, JobStatus

__all__ = ["CallContext", "StatusChange", "ganga_status"]

_GANGA_ONLY: Final = {
    "completed_frozen": JobStatus.COMPLETED,
    "failed_frozen": JobStatus.FAILED,
}
"""Ganga's frozen states (``j.freeze()``) end monitoring just like the states they freeze."""


def ganga_status(text: str | None) -> JobStatus | None:
    """The monitor's status for one of Ganga's status names, or ``None`` for a name it does not know."""
    if text is None:
        return None
    try:
        return JobStatus(text)
    except ValueError:
        return _GANGA_ONLY.get(text)


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One status change of a Ganga job, in Ganga's own words.

    ``job_id`` is Ganga's full id (``"3"``, or ``"2.4"`` for subjob 4 of job 2) and ``group``
    the master's id for a subjob.
    """

    job_id: str
    backend: str
    old: str | None
    new: str
    at: float
    name: str = ""
    group: str = ""
    exit_code: int | None = None
    source: ChangeSource = "user"
    op_id: int | None = None
    outputdir: str | None = None


@dataclass(slots=True)
class CallContext:
    """The monitoring call a Ganga thread is inside, if any (kept in a context variable).

    When ``batch`` is set, changes of those jobs are kept in ``collected`` for the caller,
    which reports them as the answer of its call, instead of being posted on their own.
    """

    source: ChangeSource
    op_id: int | None = None
    batch: frozenset[str] | None = None
    collected: list[StatusChange] = field(default_factory=list)
    changed: int = 0


def job_from_change(change: StatusChange, status: JobStatus) -> Job:
    """The monitor's record of a job first heard of through ``change``, now in ``status``.

    It starts in the status the job left (when Ganga's is known), so the change itself is
    applied, and published, as a transition.
    """
    return Job(
        job_id=change.job_id,
        backend=change.backend,
        name=change.name,
        group=change.group,
        backend_id=change.job_id,
        status=ganga_status(change.old) or status,
        status_since=change.at,
        last_confirmed=change.at,
        exit_code=change.exit_code,
    )
