"""Our scheduler, three ways: the blocking client on threads, the asyncio client, subprocess workers.

Each lane is a ``DiracSimBackend`` (``threaded``, ``asynchronous`` or ``isolated``) with the
lane's bulk limit, concurrency and the workload's interval for the lane. The adaptive interval policy is set to a fixed
interval (``fast=slow=1``) so every model polls at a constant rate per backend, as Ganga does.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from monitor_core import AdaptiveInterval, EventBus, Job, JobStatus, OutputSink, Scheduler, SchedulerConfig
from monitor_core.backends import Capabilities, ProcessRunner
from monitor_core.backends.dirac_sim import DiracSimBackend

from .lanes import Submitted

KINDS = ("threads", "asyncio", "processes")
GANGA_DOWNLOAD_THREADS = min(32, (os.cpu_count() or 1) + 4)


class SchedulerModel:
    """Adapter between the benchmark and :class:`monitor_core.Scheduler`."""

    track_ops = True

    def __init__(
        self,
        kind: str,
        lanes: Sequence[Submitted],
        bus: EventBus,
        workdir: Path,
        *,
        intervals: Mapping[str, float] | None = None,
    ) -> None:
        backends = []
        for submitted in lanes:
            lane = submitted.lane
            caps = Capabilities(
                max_batch=lane.max_bulk,
                max_concurrency=lane.concurrency,
                # As many downloads at once as Ganga 8.7's DIRAC executor runs, a default
                # ThreadPoolExecutor(): min(32, cores + 4) (ganga_async.py, DiracProcessManager.py).
                fetch_concurrency=GANGA_DOWNLOAD_THREADS,
                poll_interval=(intervals or {}).get(lane.name, lane.interval),
                call_timeout=lane.call_timeout,
            )
            if kind == "threads":
                backend = DiracSimBackend.threaded(submitted.port, name=lane.name, capabilities=caps)
            elif kind == "asyncio":
                backend = DiracSimBackend.asynchronous(submitted.port, name=lane.name, capabilities=caps)
            elif kind == "processes":
                backend = DiracSimBackend.isolated(submitted.port, name=lane.name, capabilities=caps)
            else:
                raise ValueError(f"unknown scheduler model {kind!r}")
            backends.append(backend)
        self.lanes = lanes
        self.scheduler = Scheduler(
            backends,
            bus=bus,
            outputs=OutputSink(workdir / "outputs"),
            config=SchedulerConfig(drain_timeout=2.0),
            policy=AdaptiveInterval(fast=1.0, slow=1.0),
            session=f"bench-{kind}",
        )

    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the monitoring runs on (where loop lag is measured)."""
        return asyncio.get_running_loop()

    async def start(self) -> None:
        await self.scheduler.__aenter__()
        # Subprocess workers import their client after they are spawned; a session starts
        # them once, so let every worker answer one call before anything is measured.
        for lane in self.scheduler.lanes.values():
            backend = lane.backend
            if isinstance(backend, DiracSimBackend) and isinstance(backend.runner, ProcessRunner):
                size = lane.caps.max_concurrency + lane.caps.fetch_concurrency
                await asyncio.gather(*(backend.runner.call("call", "ping") for _ in range(size)))

    async def track(self) -> None:
        """Hand every job to the scheduler as already running, due now (in bulk, as a resumed session does).

        One lane after another, as a session reads its jobs back a backend at a time: the first
        lane's jobs are polled while the next lane's are still being read.
        """
        now = time.time()
        number = 0
        for submitted in self.lanes:
            name, first = submitted.lane.name, submitted.first_id
            jobs = [
                Job(
                    job_id=str(number + k + 1),
                    backend=name,
                    backend_id=str(first + k),
                    status=JobStatus.RUNNING,
                    status_since=now,
                    last_confirmed=now,
                )
                for k in range(submitted.count)
            ]
            number += submitted.count
            await self.scheduler.track_all(jobs, source="restore")

    async def stop(self) -> None:
        await self.scheduler.aclose()
