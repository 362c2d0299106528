"""A scripted in-memory backend for scheduler tests: every call is recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from monitor_core import JobSpec, JobStatus
from monitor_core.backends import (
    Backend,
    BackendError,
    Capabilities,
    FetchResult,
    PollResult,
    ServiceUnreachable,
    StatusReport,
)


@dataclass
class _Scripted:
    timeline: list[JobStatus]
    polls: int = 0


@dataclass
class CallLog:
    batches: list[tuple[str, ...]] = field(default_factory=list)
    fetches: list[str] = field(default_factory=list)
    kills: list[str] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0
    polls_in_flight: int = 0
    peak_polls_in_flight: int = 0


class ScriptedBackend(Backend):
    """Each job walks through its timeline one step per poll of it; the last step sticks.

    ``mode`` switches the whole backend to ``"hang"`` (calls never answer), ``"fail"`` (calls
    raise) or ``"refuse"`` (no connection is made) at any time; ``delay`` makes every call take
    that long.
    """

    def __init__(
        self,
        name: str,
        *,
        caps: Capabilities | None = None,
        timeline: Sequence[JobStatus] = (JobStatus.RUNNING, JobStatus.COMPLETED),
        delay: float = 0.0,
    ) -> None:
        super().__init__(
            name, caps or Capabilities(max_batch=10, max_concurrency=2, poll_interval=0.05, call_timeout=2)
        )
        self.default_timeline = list(timeline)
        self.jobs: dict[str, _Scripted] = {}
        self.log = CallLog()
        self.delay = delay
        self.mode = "ok"
        self.fetch_mode = "ok"
        self.fetch_delay = 0.0
        """Extra seconds every output fetch takes."""
        self.hang_first_fetch: set[str] = set()
        """Backend ids whose first fetch never answers (a tail to hedge)."""
        self.push_on_submit: JobStatus | None = None
        """Report this status for each new job by push, before ``submit`` returns its id."""
        self.calls_started = asyncio.Event()
        self.failing_rounds = 0
        """When set, polls fail in runs of this many, then as many succeed (a service with bad moments)."""
        self._never = asyncio.Event()

    async def submit(self, specs: Sequence[JobSpec]) -> list[str]:
        ids = []
        for _spec in specs:
            backend_id = f"{self.name}-{len(self.jobs) + 1}"
            self.jobs[backend_id] = _Scripted(list(self.default_timeline))
            ids.append(backend_id)
        if self.push_on_submit is not None:
            for backend_id in ids:
                self._report(StatusReport(backend_id, self.push_on_submit, "pushed"))
        return ids

    async def _enter(self, mode: str | None = None) -> None:
        mode = mode or self.mode
        self.log.in_flight += 1
        self.log.peak_in_flight = max(self.log.peak_in_flight, self.log.in_flight)
        self.calls_started.set()
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if mode == "hang":
                await self._never.wait()
            if mode == "fail":
                raise BackendError(f"{self.name} is down")
            if mode == "refuse":
                raise ServiceUnreachable(f"{self.name} refused the connection")
        finally:
            self.log.in_flight -= 1

    async def poll(self, backend_ids: Sequence[str]) -> PollResult:
        self.log.batches.append(tuple(backend_ids))
        self.log.polls_in_flight += 1
        self.log.peak_polls_in_flight = max(self.log.peak_polls_in_flight, self.log.polls_in_flight)
        bad_moment = self.failing_rounds and (len(self.log.batches) - 1) // self.failing_rounds % 2 == 0
        try:
            await self._enter("fail" if bad_moment else None)
        finally:
            self.log.polls_in_flight -= 1
        reports = []
        for backend_id in backend_ids:
            job = self.jobs[backend_id]
            status = job.timeline[min(job.polls, len(job.timeline) - 1)]
            job.polls += 1
            reports.append(StatusReport(backend_id, status, f"step {job.polls}"))
        return PollResult(reports=reports)

    async def kill(self, backend_id: str) -> None:
        self.log.kills.append(backend_id)
        job = self.jobs[backend_id]
        job.timeline, job.polls = [JobStatus.KILLED], 0

    async def fetch_output(self, backend_id: str, destination: Path) -> FetchResult:
        self.log.fetches.append(backend_id)
        mode = self.fetch_mode if self.fetch_mode != "ok" else None
        if backend_id in self.hang_first_fetch:
            self.hang_first_fetch.discard(backend_id)
            mode = "hang"
        if self.fetch_delay:
            await asyncio.sleep(self.fetch_delay)
        await self._enter(mode)
        (destination / "stdout").write_text(f"output of {backend_id}\n")
        return FetchResult(("stdout",))


def specs(count: int, backend: str, *, group: str = "g") -> list[JobSpec]:
    return [JobSpec(name=f"{backend}.{i}", backend=backend, group=group) for i in range(count)]
