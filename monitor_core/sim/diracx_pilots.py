"""Pilots for a local DiracX: nothing in it runs jobs, so these move them along.

A :class:`PilotFleet` does what DIRAC's agents and pilots would, through DiracX's own API
(status updates and heartbeats with a ``GenericPilot`` token, the agents' view of the queue
with an administrator's), and only along paths DIRAC's state machine allows:

* ``Received -> Checking -> Waiting`` (the optimizers), in one timed update per job;
* ``Waiting -> Matched -> Running`` when a pilot slot is free (the matcher and a pilot); a
  match whose answer was lost is read back each round, and run once the service shows it
  ``Running``, until it is matched again;
* heartbeats while running (``PATCH /api/jobs/heartbeat``), which also bring back the
  ``Kill`` commands of jobs the user killed, as a real job agent learns of them;
* at the end ``Completing -> Done`` or ``Completing -> Failed`` after uploading an output
  sandbox (``std.out``/``std.err`` in a ``tar.bz2``) through a presigned upload and
  ``PATCH /api/jobs/{id}/sandbox/output``; the sandbox is uploaded with the job owner's
  token, the stand-in for the delegated proxy a real pilot runs the job with;
* a stalling job stops sending heartbeats, is declared ``Stalled`` after ``stall_after``
  (the stalled-job agent), then ``Failed`` after ``stalled_fail_after``.

What each job does comes from a ``plan`` callback (by job id and JobName), by default a
seeded draw from the configured rates.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import random
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ..backends._base import BackendError
from ..backends.diracx_http import DiracxClient, TokenSource

__all__ = ["JobPlan", "PilotConfig", "PilotFleet", "make_sandbox"]

log = logging.getLogger(__name__)

Outcome = Literal["done", "failed", "stalled"]


@dataclass(frozen=True, slots=True)
class JobPlan:
    """How one job will behave on its worker node."""

    run_time: float
    outcome: Outcome = "done"


@dataclass(frozen=True, slots=True)
class PilotConfig:
    """The fleet's shape and the workload's habits.

    Raises:
        ValueError: on construction, when a value is out of range.
    """

    slots: int = 200
    """Jobs running at once (pilots on worker nodes)."""
    mean_run_time: float = 8.0
    failure_rate: float = 0.1
    stall_rate: float = 0.0
    heartbeat_interval: float = 5.0
    stall_after: float = 6.0
    """Seconds without a heartbeat before a job is declared ``Stalled``."""
    stalled_fail_after: float = 3.0
    """Seconds a ``Stalled`` job stays so before it is ``Failed``."""
    scan_interval: float = 1.0
    batch: int = 500
    """Most jobs moved in one status update."""
    seed: int = 7

    def __post_init__(self) -> None:
        if self.slots < 1 or self.batch < 1:
            raise ValueError("slots and batch must be positive")
        for name in ("failure_rate", "stall_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if min(self.mean_run_time, self.heartbeat_interval, self.scan_interval) <= 0:
            raise ValueError("times must be positive")


@dataclass(slots=True)
class _Running:
    plan: JobPlan
    started: float
    last_heartbeat: float = 0.0
    stalled_at: float | None = None
    uploaded: bool = False


PlanFor = Callable[[int, str], JobPlan]


def make_sandbox(files: dict[str, bytes]) -> bytes:
    """A ``tar.bz2`` holding ``files``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _at(base: datetime, step: int) -> str:
    # Several timed updates in one request apply in time order; a microsecond apart is enough.
    return (base + timedelta(microseconds=step)).isoformat()


@dataclass(slots=True)
class FleetCounters:
    """What the fleet did, for tests and the demo."""

    moves: Counter[str] = field(default_factory=Counter)
    sandboxes: int = 0
    heartbeats: int = 0
    kills_seen: int = 0
    errors: int = 0
    confirmed_late: int = 0
    """Matches the service took although its answer was lost (a restart mid-request)."""


class PilotFleet:
    """Pilots that run the jobs of a DiracX service.

    Args:
        url: the service.
        pilot_tokens: a ``GenericPilot`` identity (may update any job).
        owner_tokens: the job owner's identity, for sandbox uploads.
        agent_tokens: a ``JobAdministrator`` identity for what DIRAC's agents see server-side
            (the jobs waiting in each status).
        config: the fleet's shape.
        plan: what each job will do; by default drawn from ``config``'s rates.
    """

    def __init__(
        self,
        url: str,
        pilot_tokens: TokenSource,
        owner_tokens: TokenSource,
        agent_tokens: TokenSource,
        config: PilotConfig | None = None,
        plan: PlanFor | None = None,
    ) -> None:
        self.config = config or PilotConfig()
        self.pilot = DiracxClient(url, pilot_tokens)
        self.owner = DiracxClient(url, owner_tokens)
        self.agent = DiracxClient(url, agent_tokens)
        self._rng = random.Random(self.config.seed)
        self._plan = plan or self.draw
        self.running: dict[int, _Running] = {}
        self._unconfirmed: dict[int, _Running] = {}
        self.counters = FleetCounters()
        self.paused = False
        self._task: asyncio.Task[None] | None = None

    def draw(self, job_id: int, name: str) -> JobPlan:
        """A plan drawn from the configured rates."""
        cfg, rng = self.config, self._rng
        run_time = rng.uniform(0.5, 1.5) * cfg.mean_run_time
        roll = rng.random()
        if roll < cfg.stall_rate:
            return JobPlan(run_time, "stalled")
        if roll < cfg.stall_rate + cfg.failure_rate:
            return JobPlan(run_time, "failed")
        return JobPlan(run_time, "done")

    async def __aenter__(self) -> PilotFleet:
        self._task = asyncio.create_task(self.run(), name="diracx-pilots")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.pilot.close()
        await self.owner.close()
        await self.agent.close()

    async def run(self) -> None:
        """Scan and move jobs until cancelled; a service outage only delays the pilots."""
        while True:
            started = time.monotonic()
            if not self.paused:
                try:
                    await self.step()
                except BackendError as exc:
                    self.counters.errors += 1
                    log.info("pilots: %s", exc)
            await asyncio.sleep(max(0.0, self.config.scan_interval - (time.monotonic() - started)))

    async def step(self) -> None:
        """One round: optimizers, matching, heartbeats, endings."""
        await self._confirm()
        await self._optimize()
        await self._match()
        await self._heartbeat()
        await self._finish()

    # -- the service -------------------------------------------------------------------------

    async def _search(self, status: str, limit: int) -> list[dict[str, Any]]:
        return await self._search_by({"parameter": "Status", "operator": "eq", "value": status}, limit)

    async def _search_by(self, condition: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        body = {
            "parameters": ["JobID", "JobName", "Status"],
            "search": [condition],
            "sort": [{"parameter": "JobID", "direction": "asc"}],
        }
        _, rows = await self.agent.json(
            "POST", "/api/jobs/search", kind="agent-search", params={"per_page": limit}, json_body=body, ok=(200, 206)
        )
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

    async def _set(self, updates: dict[int, list[tuple[str, str, str]]]) -> None:
        """Timed status updates: per job, (Status, MinorStatus, Source) in order."""
        items = list(updates.items())
        for start in range(0, len(items), self.config.batch):
            now = datetime.now(UTC)
            body = {
                str(job_id): {
                    _at(now, step): {"Status": status, "MinorStatus": minor, "Source": source}
                    for step, (status, minor, source) in enumerate(moves)
                }
                for job_id, moves in items[start : start + self.config.batch]
            }
            await self.pilot.json("PATCH", "/api/jobs/status", kind="pilot-status", json_body=body)
            for _, moves in items[start : start + self.config.batch]:
                for status, _, _ in moves:
                    self.counters.moves[status] += 1

    async def _optimize(self) -> None:
        rows = await self._search("Received", self.config.batch * 4)
        if rows:
            await self._set(
                {
                    int(r["JobID"]): [
                        ("Checking", "JobSanity", "JobPathAgent"),
                        ("Waiting", "Pilot Agent Submission", "TaskQueueAgent"),
                    ]
                    for r in rows
                }
            )

    async def _match(self) -> None:
        free = self.config.slots - len(self.running)
        if free <= 0:
            return
        rows = await self._search("Waiting", free)
        if not rows:
            return
        now = time.monotonic()
        updates: dict[int, list[tuple[str, str, str]]] = {}
        matched: dict[int, _Running] = {}
        for row in rows:
            job_id = int(row["JobID"])
            name = row.get("JobName") if isinstance(row.get("JobName"), str) else ""
            matched[job_id] = _Running(self._plan(job_id, str(name)), now, now)
            updates[job_id] = [
                ("Matched", "Assigned", "Matcher"),
                ("Running", "Job Initialization", "JobWrapper"),
                ("Running", "Application", "JobWrapper"),
            ]
        try:
            await self._set(updates)
        except BackendError:
            # A restart can cut the request after the service applied it, and a request the
            # pilot gave up on can still be applied later: which of these are Running is read
            # next round, and the rest are matched again.
            self._unconfirmed.update(matched)
            raise
        self.running.update(matched)
        for job_id in matched:
            self._unconfirmed.pop(job_id, None)

    async def _confirm(self) -> None:
        """Adopt the matches the service took although their answer was lost.

        A match still ``Waiting`` stays unconfirmed until it is matched again: the lost request
        may yet be applied (the service still working on it when the pilot gave up), and a job
        it moves to ``Running`` is in no ``Waiting`` search, so forgetting it would leave it
        running at the service with no pilot, for ever.
        """
        if not self._unconfirmed:
            return
        ids = sorted(self._unconfirmed)
        rows = await self._search_by({"parameter": "JobID", "operator": "in", "values": ids}, len(ids))
        waiting: set[int] = set()
        for row in rows:
            job_id = int(row["JobID"])
            if row.get("Status") == "Running" and job_id in self._unconfirmed:
                self.running[job_id] = self._unconfirmed[job_id]
                self.counters.confirmed_late += 1
            elif row.get("Status") == "Waiting":
                waiting.add(job_id)
        self._unconfirmed = {job_id: run for job_id, run in self._unconfirmed.items() if job_id in waiting}

    async def _heartbeat(self) -> None:
        now = time.monotonic()
        due = [
            job_id
            for job_id, run in self.running.items()
            if run.plan.outcome != "stalled" and now - run.last_heartbeat >= self.config.heartbeat_interval
        ]
        if not due:
            return
        data = {str(job_id): {"LoadAverage": round(self._rng.uniform(0.5, 2.0), 2)} for job_id in due}
        _, commands = await self.pilot.json("PATCH", "/api/jobs/heartbeat", kind="pilot-heartbeat", json_body=data)
        self.counters.heartbeats += len(due)
        for job_id in due:
            self.running[job_id].last_heartbeat = now
        for command in commands if isinstance(commands, list) else ():
            # The job agent kills the payload: the job is already Killed at the service.
            killed = isinstance(command, dict) and command.get("command") == "Kill"
            if killed and self.running.pop(int(command.get("job_id", -1)), None) is not None:
                self.counters.kills_seen += 1

    async def _finish(self) -> None:
        now = time.monotonic()
        cfg = self.config
        ending: list[tuple[int, _Running]] = []
        stalling: dict[int, list[tuple[str, str, str]]] = {}
        failing: dict[int, list[tuple[str, str, str]]] = {}
        for job_id, run in list(self.running.items()):
            if run.plan.outcome == "stalled":
                if run.stalled_at is None and now - run.last_heartbeat >= cfg.stall_after:
                    stalling[job_id] = [("Stalled", "Job stalled: pilot not running", "StalledJobAgent")]
                elif run.stalled_at is not None and now - run.stalled_at >= cfg.stalled_fail_after:
                    failing[job_id] = [("Failed", "Job stalled: pilot not running", "StalledJobAgent")]
            elif now - run.started >= run.plan.run_time:
                ending.append((job_id, run))
        # Each step is forgotten only once the service took it, so an outage just delays it.
        if stalling:
            await self._set(stalling)
            for job_id in stalling:
                self.running[job_id].stalled_at = now
        if failing:
            await self._set(failing)
            for job_id in failing:
                self.running.pop(job_id, None)
        if not ending:
            return
        gate = asyncio.Semaphore(8)

        async def upload(job_id: int, run: _Running) -> None:
            async with gate:
                if not run.uploaded:
                    await self._upload_output(job_id, run)
                    run.uploaded = True

        outcomes = await asyncio.gather(*(upload(job_id, run) for job_id, run in ending), return_exceptions=True)
        endings: dict[int, list[tuple[str, str, str]]] = {}
        for (job_id, run), outcome in zip(ending, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                self.counters.errors += 1
                log.info("pilots: output sandbox of job %s: %s", job_id, outcome)
                continue  # tried again next round
            final = (
                ("Done", "Execution Complete")
                if run.plan.outcome == "done"
                else ("Failed", "Application Finished With Errors")
            )
            endings[job_id] = [("Completing", "Uploading Output Sandbox", "JobWrapper"), (*final, "JobWrapper")]
        await self._set(endings)
        for job_id in endings:
            self.running.pop(job_id, None)

    async def _upload_output(self, job_id: int, run: _Running) -> None:
        ok = run.plan.outcome == "done"
        sandbox = make_sandbox(
            {
                "std.out": f"job {job_id} ran for {run.plan.run_time:.1f} s\n".encode(),
                "std.err": b"" if ok else f"job {job_id}: payload exited with status 1\n".encode(),
            }
        )
        info = {
            "checksum_algorithm": "sha256",
            "checksum": hashlib.sha256(sandbox).hexdigest(),
            "size": len(sandbox),
            "format": "tar.bz2",
        }
        _, answer = await self.owner.json("POST", "/api/jobs/sandbox", kind="sandbox-init", json_body=info)
        if not isinstance(answer, dict) or not isinstance(answer.get("pfn"), str):
            raise BackendError(f"sandbox upload of job {job_id}: no PFN in the answer")
        if answer.get("url"):
            await self.owner.upload_form(answer["url"], answer.get("fields") or {}, sandbox, kind="sandbox-upload")
        await self.owner.json(
            "PATCH", f"/api/jobs/{job_id}/sandbox/output", kind="sandbox-assign", json_body=answer["pfn"]
        )
        self.counters.sandboxes += 1

    def forget(self, job_ids: Iterable[int]) -> None:
        for job_id in job_ids:
            self.running.pop(job_id, None)
            self._unconfirmed.pop(job_id, None)
