"""The simulated DIRAC job service: job lifetimes and DIRAC's major statuses.

A job's life is drawn when it is submitted, from the service's seeded random source:
time in the queue (Received, Checking, Staging, Waiting, Matched), time running (with
an occasional Stalled spell), a short Completing, then its final status. The status at
any moment is computed from that timeline, so 100,000 jobs cost a few floats each.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Final

from .._model import JobStatus

__all__ = [
    "DIRAC_STATUSES",
    "DIRAC_STATUS_MAPPING",
    "DiracSimConfig",
    "DiracSimService",
    "ServiceError",
]

DIRAC_STATUSES: Final = (
    "Received",
    "Checking",
    "Staging",
    "Waiting",
    "Matched",
    "Running",
    "Completing",
    "Stalled",
    "Done",
    "Failed",
    "Killed",
    "Deleted",
)

#: DIRAC major status -> Ganga job status, as Ganga's ``[DIRAC] statusmapping``.
DIRAC_STATUS_MAPPING: Final[dict[str, JobStatus]] = {
    "Received": JobStatus.SUBMITTED,
    "Checking": JobStatus.SUBMITTED,
    "Staging": JobStatus.SUBMITTED,
    "Waiting": JobStatus.SUBMITTED,
    "Matched": JobStatus.SUBMITTED,
    "Running": JobStatus.RUNNING,
    "Completing": JobStatus.RUNNING,
    "Stalled": JobStatus.RUNNING,
    "Done": JobStatus.COMPLETED,
    "Failed": JobStatus.FAILED,
    "Killed": JobStatus.FAILED,
    "Deleted": JobStatus.FAILED,
}

_FINAL_BY_OUTCOME: Final = {"done": "Done", "failed": "Failed", "killed": "Killed", "deleted": "Deleted"}
_QUEUE_STEPS: Final = ("Received", "Checking", "Staging", "Waiting", "Matched")


class ServiceError(Exception):
    """What DIRAC would answer with ``S_ERROR``."""


@dataclass(frozen=True, slots=True)
class DiracSimConfig:
    """How the simulated service behaves. Times are seconds."""

    latency_median: float = 0.3
    """Median duration of one call, whatever its size."""
    latency_sigma: float = 0.25
    """Spread of call durations (sigma of a log-normal)."""
    latency_per_job: float = 0.0004
    """Extra duration for each job id in a bulk call."""
    max_bulk: int = 500
    """Most job ids one status call may carry; more is an error, as on a real service."""
    error_rate: float = 0.0
    """Share of calls answered with S_ERROR."""
    hang_rate: float = 0.0
    """Share of calls that never answer (until ``hang_seconds``)."""
    hang_seconds: float = 3600.0
    garbage_rate: float = 0.0
    """Share of status calls whose answer holds a malformed entry."""
    queue_time: float = 4.0
    """Mean time a job waits before it runs."""
    completing_time: float = 0.5
    stall_rate: float = 0.05
    """Share of jobs that spend a spell Stalled while running."""
    output_latency: float = 0.2
    seed: int = 1

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-able keyword arguments."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(slots=True)
class _SimJob:
    name: str
    submitted: float
    queue: float
    duration: float
    outcome: str
    stall_start: float | None
    stall_length: float
    killed_at: float | None = None
    queue_steps: tuple[float, ...] = field(default=())


class DiracSimService:
    """DIRAC's job database and its status queries, in memory.

    Args:
        config: the service's behaviour.
        clock: a function returning the service's current time in seconds.
    """

    def __init__(self, config: DiracSimConfig, clock: Any) -> None:
        self.config = config
        self._clock = clock
        self._random = random.Random(config.seed)
        self._jobs: dict[int, _SimJob] = {}
        self._next_id = 1000

    def __len__(self) -> int:
        return len(self._jobs)

    def submit(self, specs: list[dict[str, Any]]) -> list[int]:
        """Accept jobs ``{"name", "duration", "outcome"}``; return their DIRAC ids.

        Raises:
            ServiceError: a spec is malformed.
        """
        now = self._clock()
        ids = []
        for spec in specs:
            outcome = spec.get("outcome", "done")
            if outcome not in _FINAL_BY_OUTCOME:
                raise ServiceError(f"unknown outcome {outcome!r}")
            duration = float(spec.get("duration", 10.0))
            queue = self._random.expovariate(1.0 / self.config.queue_time) if self.config.queue_time > 0 else 0.0
            stalls = self._random.random() < self.config.stall_rate and duration > 1.0
            steps = sorted(self._random.random() * queue for _ in _QUEUE_STEPS[1:])
            job = _SimJob(
                name=str(spec.get("name", "")),
                submitted=now,
                queue=queue,
                duration=duration,
                outcome=outcome,
                stall_start=self._random.uniform(0.2, 0.6) * duration if stalls else None,
                stall_length=self._random.uniform(0.1, 0.3) * duration if stalls else 0.0,
                queue_steps=(0.0, *steps),
            )
            self._next_id += 1
            self._jobs[self._next_id] = job
            ids.append(self._next_id)
        return ids

    def _status(self, job: _SimJob, now: float) -> tuple[str, str]:
        age = now - job.submitted
        if job.killed_at is not None and now >= job.killed_at:
            return "Killed", "Marked for termination"
        if age < job.queue:
            step = sum(1 for start in job.queue_steps if start <= age) - 1
            return _QUEUE_STEPS[max(step, 0)], "Pilot Agent Submission"
        running_for = age - job.queue
        if running_for < job.duration:
            if job.stall_start is not None and job.stall_start <= running_for < job.stall_start + job.stall_length:
                return "Stalled", "Job stalled: pilot not running"
            return "Running", "Application"
        if running_for < job.duration + self.config.completing_time:
            return "Completing", "Uploading Output Sandbox"
        final = _FINAL_BY_OUTCOME[job.outcome]
        return final, "Execution Complete" if final == "Done" else "Application Finished With Errors"

    def get_job_status(self, ids: list[int]) -> dict[str, dict[str, str]]:
        """Bulk status of jobs, as ``getJobStatus(list)``; unknown ids are left out.

        Raises:
            ServiceError: more ids than the bulk limit.
        """
        if len(ids) > self.config.max_bulk:
            raise ServiceError(f"Too many job IDs: {len(ids)} > {self.config.max_bulk}")
        now = self._clock()
        answer: dict[str, dict[str, str]] = {}
        for job_id in ids:
            job = self._jobs.get(int(job_id))
            if job is None:
                continue
            status, minor = self._status(job, now)
            answer[str(job_id)] = {"Status": status, "MinorStatus": minor, "Site": "LCG.Sim.org"}
        return answer

    def records(self, ids: list[int], wall: float) -> list[dict[str, Any]]:
        """The jobs' timelines as JSON-able records, their times as wall-clock times.

        Args:
            ids: the jobs.
            wall: the wall-clock time that is this service's now.
        """
        now = self._clock()
        records = []
        for job_id in ids:
            job = self._jobs.get(int(job_id))
            if job is None:
                continue
            record = {name: getattr(job, name) for name in _SimJob.__dataclass_fields__}
            record["id"] = int(job_id)
            record["submitted"] = wall - (now - job.submitted)
            record["killed_at"] = None if job.killed_at is None else wall - (now - job.killed_at)
            record["queue_steps"] = list(job.queue_steps)
            records.append(record)
        return records

    def restore(self, records: list[dict[str, Any]], wall: float) -> int:
        """Take back jobs from :meth:`records` (a later record of a job replaces an earlier one).

        Args:
            records: what :meth:`records` gave, possibly by another process.
            wall: the wall-clock time that is this service's now.

        Returns:
            How many jobs the service knows afterwards.

        Raises:
            ServiceError: a record is malformed.
        """
        now = self._clock()
        try:
            for record in records:
                fields = {name: record[name] for name in _SimJob.__dataclass_fields__}
                fields["submitted"] = now - (wall - float(record["submitted"]))
                killed = record["killed_at"]
                fields["killed_at"] = None if killed is None else now - (wall - float(killed))
                fields["queue_steps"] = tuple(float(step) for step in record["queue_steps"])
                job_id = int(record["id"])
                self._jobs[job_id] = _SimJob(**fields)
                self._next_id = max(self._next_id, job_id)
        except (KeyError, TypeError, ValueError) as exc:
            raise ServiceError(f"malformed job record: {exc}") from exc
        return len(self._jobs)

    def kill(self, ids: list[int]) -> None:
        """Mark jobs for termination; they show Killed from now on."""
        now = self._clock()
        for job_id in ids:
            job = self._jobs.get(int(job_id))
            if job is not None and job.killed_at is None:
                job.killed_at = now

    def output_sandbox(self, job_id: int) -> dict[str, str]:
        """The files of a finished job's output sandbox.

        Raises:
            ServiceError: the job is unknown or not finished.
        """
        job = self._jobs.get(int(job_id))
        if job is None:
            raise ServiceError(f"No such job {job_id}")
        status, _ = self._status(job, self._clock())
        if status not in ("Done", "Failed", "Killed", "Deleted"):
            raise ServiceError(f"Job {job_id} is {status}: no output sandbox yet")
        return {
            "std.out": f"job {job_id} ({job.name}) ran {job.duration:.1f}s\nfinal status {status}\n",
            "std.err": "" if status == "Done" else f"{job.name}: application exited with errors\n",
        }

    def draw_latency(self, batch: int) -> float:
        """The duration of one call carrying ``batch`` job ids."""
        base = self._random.lognormvariate(0.0, self.config.latency_sigma) * self.config.latency_median
        return base + batch * self.config.latency_per_job

    def draw(self) -> float:
        """A uniform draw from the service's random source (for fault injection)."""
        return self._random.random()
