"""The monitor on the real test cluster: a mixed run end to end, and a controller outage."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest

from ganga_tui.tally import Tally
from monitor_core import (
    BreakerChanged,
    Event,
    EventBus,
    JobChanged,
    JobSpec,
    JobStatus,
    OutputSink,
    Scheduler,
    SchedulerConfig,
    Subscription,
)
from monitor_core.backends.local import DEFAULT_CAPABILITIES as LOCAL_CAPABILITIES
from monitor_core.backends.local import LocalBackend
from monitor_core.backends.slurm import DEFAULT_CAPABILITIES, SlurmBackend
from monitor_core.sim import local_command

from ..conftest import until
from .conftest import MakeSlurmBackend, SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

CONFIG = SchedulerConfig(
    backoff_base=0.2,
    backoff_cap=2.0,
    fetch_backoff_cap=2.0,
    breaker_threshold=3,
    breaker_reset=1.0,
    breaker_reset_cap=4.0,
    sample_every=0.25,
)


def _job(name: str, seconds: float, exit_code: int) -> JobSpec:
    return JobSpec(
        name=name,
        backend="slurm",
        command=local_command(name, seconds, exit_code),
        duration=seconds,
        exit_code=exit_code,
        expected=JobStatus.COMPLETED if exit_code == 0 else JobStatus.FAILED,
    )


def _collect(subscription: Subscription, into: list[Event], tally: Tally) -> asyncio.Task[None]:
    async def pump() -> None:
        async for event in subscription:
            into.append(event)
            tally.apply(event)

    return asyncio.create_task(pump())


def _assert_truly_ended(scheduler: Scheduler, outputs: Path) -> None:
    for job in scheduler.jobs.values():
        assert job.status == job.expected, (job, job.info)
        if job.expected == JobStatus.KILLED:
            continue
        assert job.job_id in scheduler.outputs_collected, job
        stdout = (outputs / job.job_id / "stdout").read_text()
        assert stdout.startswith(f"{job.name} starting\n"), job


async def test_two_hundred_mixed_jobs_one_cancelled_one_over_its_time(
    make_slurm_backend: MakeSlurmBackend, tmp_path: Path
) -> None:
    specs = [
        # Slurm limits are whole minutes and enforced every ~30 s: this one ends 60-90 s in.
        JobSpec("overtime", "slurm", command=local_command("overtime", 300, 0), expected=JobStatus.FAILED),
        JobSpec("cancelled", "slurm", command=("sleep", "300"), expected=JobStatus.KILLED),
        *(_job(f"mixed-{i}", (0.0, 0.3, 1.0, 2.0, 0.5)[i % 5], (0, 0, 0, 1, 2, 3, 42)[i % 7]) for i in range(200)),
    ]
    backend = make_slurm_backend(
        capabilities=replace(DEFAULT_CAPABILITIES, poll_interval=1.0, max_batch=100),
        options_for=lambda spec: ["--time=0:01"] if spec.name == "overtime" else [],
    )
    outputs = tmp_path / "outputs"
    async with Scheduler([backend], bus=EventBus(), outputs=OutputSink(outputs), config=CONFIG) as scheduler:
        jobs = {job.name: job for job in await scheduler.submit(specs)}
        cancelled = jobs["cancelled"]
        await until(lambda: cancelled.status == JobStatus.RUNNING, within=60)
        assert cancelled.backend_id is not None
        await backend.kill(cancelled.backend_id)
        async with asyncio.timeout(200):
            await scheduler.wait_all_final()
        assert len(scheduler.jobs) == 202
        _assert_truly_ended(scheduler, outputs)
        for spec in specs[2:]:
            job = jobs[spec.name]
            assert job.exit_code == spec.exit_code, job
            assert (outputs / job.job_id / "stdout").read_text().endswith(f"done with {spec.exit_code}\n")
            assert (outputs / job.job_id / "stderr").read_text() == (
                "" if spec.exit_code == 0 else "simulated failure\n"
            )
        overtime = jobs["overtime"]
        assert overtime.info == "TIMEOUT (TimeLimit)"
        assert "DUE TO TIME LIMIT" in (outputs / overtime.job_id / "stderr").read_text()
        assert cancelled.info.startswith("CANCELLED")
        assert scheduler.counters["rejections"] == 0
        assert scheduler.counters["outputs_lost"] == 0


async def test_controller_outage_opens_the_breaker_spares_other_lanes_and_loses_nothing(
    slurm_cluster: SlurmCluster, make_slurm_backend: MakeSlurmBackend, tmp_path: Path
) -> None:
    slurm: SlurmBackend = make_slurm_backend(
        capabilities=replace(DEFAULT_CAPABILITIES, poll_interval=1.0, max_batch=10)
    )
    local = LocalBackend(tmp_path / "local", capabilities=replace(LOCAL_CAPABILITIES, poll_interval=1.0))
    bus = EventBus()
    events: list[Event] = []
    tally = Tally()
    outputs = tmp_path / "outputs"
    # Some jobs end while the controller is away, some after it is back.
    slurm_specs = [_job(f"outage-{i}", 3.0 + 0.7 * i, (0, 0, 3)[i % 3]) for i in range(30)]
    async with Scheduler([slurm, local], bus=bus, outputs=OutputSink(outputs), config=CONFIG) as scheduler:
        pump = _collect(bus.subscribe(name="test"), events, tally)
        slurm_jobs = await scheduler.submit(slurm_specs)
        await until(lambda: sum(job.status == JobStatus.RUNNING for job in slurm_jobs) >= 10, within=60)

        await asyncio.to_thread(slurm_cluster.checked, "ctld-stop")
        stopped_at = time.time()
        local_specs = [replace(_job(f"local-{i}", 0.5 * i, i % 2), backend="local") for i in range(20)]
        local_jobs = await scheduler.submit(local_specs)
        breaker_lines: list[str] = []

        async def watch_headless_line() -> None:
            while True:
                line = tally.lag_line()
                if "slurm" in tally.backends and tally.backends["slurm"].breaker == "open":
                    breaker_lines.append(line)
                await asyncio.sleep(0.25)

        watcher = asyncio.create_task(watch_headless_line())
        await asyncio.sleep(20)
        local_final_during_outage = [job for job in local_jobs if job.status.is_final]
        restarted_at = time.time()
        await asyncio.to_thread(slurm_cluster.checked, "ctld-start")

        async with asyncio.timeout(150):
            await scheduler.wait_all_final()
        watcher.cancel()
        await until(lambda: scheduler.lanes["slurm"].breaker.state == "closed", within=30)
        _assert_truly_ended(scheduler, outputs)
        pump.cancel()

    opened = [e for e in events if isinstance(e, BreakerChanged) and e.backend == "slurm" and e.state == "open"]
    assert opened, "the slurm lane's breaker never opened"
    assert stopped_at <= opened[0].at <= restarted_at
    assert any(e for e in events if isinstance(e, BreakerChanged) and e.backend == "slurm" and e.state == "closed")
    assert not [e for e in events if isinstance(e, BreakerChanged) and e.backend == "local"]
    assert breaker_lines, "the headless lag line never showed the open breaker"
    assert "slurm lag" in breaker_lines[0]
    assert "breaker open" in breaker_lines[0]
    # Local jobs kept completing while Slurm's controller was away.
    assert local_final_during_outage == local_jobs
    local_ends = [
        e
        for e in events
        if isinstance(e, JobChanged) and e.backend == "local" and e.new.is_final and e.at < restarted_at
    ]
    assert len(local_ends) == len(local_jobs)
    assert len(scheduler.jobs) == len(slurm_specs) + len(local_specs)
