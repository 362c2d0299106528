"""The simulated DIRAC grid through its real server process and the three client flavours."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

from monitor_core import EventBus, JobSpec, JobStatus, OutputSink, Scheduler, UpdateRejected
from monitor_core.backends import BackendError, MalformedAnswer, ProcessRunner
from monitor_core.backends.dirac_sim import DEFAULT_CAPABILITIES, DiracSimBackend, parse_status_answer
from monitor_core.sim import DIRAC_STATUS_MAPPING, DIRAC_STATUSES, DiracSimConfig, DiracSimProcess, DiracSimService

from ..conftest import until
from .conftest import FAST

pytestmark = pytest.mark.timeout(90)

CAPS = replace(DEFAULT_CAPABILITIES, max_batch=20, max_concurrency=2, poll_interval=0.1, call_timeout=5)


def grid_specs(count: int, backend: str = "dirac-sim") -> list[JobSpec]:
    return [
        JobSpec(
            name=f"g{i}",
            backend=backend,
            duration=0.2,
            exit_code=3 if i % 4 == 0 else 0,
            expected=JobStatus.FAILED if i % 4 == 0 else JobStatus.COMPLETED,
        )
        for i in range(count)
    ]


def test_every_dirac_status_maps_as_gangas_statusmapping() -> None:
    assert set(DIRAC_STATUS_MAPPING) == set(DIRAC_STATUSES)
    assert DIRAC_STATUS_MAPPING["Stalled"] == JobStatus.RUNNING
    assert DIRAC_STATUS_MAPPING["Done"] == JobStatus.COMPLETED
    assert DIRAC_STATUS_MAPPING["Killed"] == JobStatus.FAILED
    assert DIRAC_STATUS_MAPPING["Deleted"] == JobStatus.FAILED


def test_service_timeline_walks_dirac_statuses_and_enforces_the_bulk_limit() -> None:
    now = [0.0]
    service = DiracSimService(DiracSimConfig(queue_time=1.0, completing_time=0.5, max_bulk=3, seed=3), lambda: now[0])
    ids = service.submit(
        [{"name": "a", "duration": 2.0, "outcome": "done"}, {"name": "b", "duration": 2.0, "outcome": "failed"}]
    )
    seen: dict[int, list[str]] = {i: [] for i in ids}
    for step in range(100):
        now[0] = step * 0.1
        for key, entry in service.get_job_status(ids).items():
            if not seen[int(key)] or seen[int(key)][-1] != entry["Status"]:
                seen[int(key)].append(entry["Status"])
    assert seen[ids[0]][0] == "Received"
    assert seen[ids[0]][-1] == "Done"
    assert seen[ids[1]][-1] == "Failed"
    assert "Running" in seen[ids[0]]
    with pytest.raises(Exception, match="Too many job IDs"):
        service.get_job_status([1, 2, 3, 4])
    assert service.get_job_status([999999]) == {}


def test_answer_validation_rejects_garbage_piece_by_piece() -> None:
    answer = {
        "OK": True,
        "Value": {
            "1": {"Status": "Running", "MinorStatus": "Application"},
            "2": {"Status": "Borked"},
            "3": "Running",
            "9": {"Status": "Done"},
        },
    }
    result = parse_status_answer(["1", "2", "3", "4"], answer)
    assert [(r.backend_id, r.status) for r in result.reports] == [("1", JobStatus.RUNNING)]
    categories = sorted((r.backend_id, r.category) for r in result.rejections)
    assert categories == [("2", "unknown_state"), ("3", "garbage"), ("4", "unknown_job"), ("9", "garbage")]
    with pytest.raises(MalformedAnswer):
        parse_status_answer(["1"], ["not", "a", "dict"])
    with pytest.raises(BackendError, match="Connection reset"):
        parse_status_answer(["1"], {"OK": False, "Message": "Connection reset"})


@pytest.mark.parametrize("flavour", ["isolated", "threaded", "asynchronous"])
async def test_each_client_flavour_reaches_the_true_final_states(
    flavour: str, dirac_service: DiracSimProcess, tmp_path: Path
) -> None:
    backend = getattr(DiracSimBackend, flavour)(dirac_service.port, name="dirac-sim", capabilities=CAPS)
    async with Scheduler([backend], bus=EventBus(), outputs=OutputSink(tmp_path / "out"), config=FAST) as scheduler:
        jobs = await scheduler.submit(grid_specs(30))
        async with asyncio.timeout(60):
            await scheduler.wait_all_final()
    assert [job.status for job in jobs] == [job.expected for job in jobs]
    assert scheduler.counters["outputs_collected"] == 30
    assert all((scheduler.outputs.path(job.job_id) / "std.out").exists() for job in jobs)


async def test_faults_are_retried_and_garbage_rejected_without_losing_a_job(tmp_path: Path) -> None:
    config = DiracSimConfig(
        latency_median=0.01,
        queue_time=0.2,
        completing_time=0.05,
        output_latency=0.01,
        error_rate=0.25,
        garbage_rate=0.3,
        hang_rate=0.05,
        hang_seconds=30,
        seed=11,
    )
    async with DiracSimProcess(config) as service:
        # Small batches: enough status calls that the service's random faults surely include garbage.
        backend = DiracSimBackend.isolated(service.port, capabilities=replace(CAPS, call_timeout=0.5, max_batch=4))
        bus = EventBus()
        async with Scheduler([backend], bus=bus, outputs=OutputSink(tmp_path / "out"), config=FAST) as scheduler:
            subscription = bus.subscribe()
            jobs = await scheduler.submit(grid_specs(40))
            async with asyncio.timeout(60):
                await scheduler.wait_all_final()
            subscription.close()
            rejected = [e async for e in subscription if isinstance(e, UpdateRejected)]
        stats = (await service.client().call("stats"))["Value"]
    assert stats["faults"].get("garbage", 0) > 0
    assert stats["faults"].get("error", 0) > 0
    assert rejected, "garbage must be rejected and published"
    assert scheduler.counters["rejections"] == len(rejected)
    assert scheduler.lanes["dirac-sim"].retries_total > 0
    assert [job.status for job in jobs] == [job.expected for job in jobs]


async def test_a_worker_killed_mid_call_is_restarted_and_nothing_is_lost(tmp_path: Path) -> None:
    config = DiracSimConfig(
        latency_median=0.4, latency_sigma=0.01, queue_time=0.1, completing_time=0.05, output_latency=0.01
    )
    async with DiracSimProcess(config) as service:
        backend = DiracSimBackend.isolated(
            service.port, capabilities=replace(CAPS, max_concurrency=1, fetch_concurrency=1)
        )
        runner = backend.runner
        assert isinstance(runner, ProcessRunner)
        async with Scheduler([backend], bus=EventBus(), outputs=OutputSink(tmp_path / "out"), config=FAST) as scheduler:
            jobs = await scheduler.submit(grid_specs(10))
            lane = scheduler.lanes["dirac-sim"]
            await until(lambda: lane.in_flight != 0, within=10)
            await asyncio.sleep(0.1)  # inside the service's 0.4 s answer
            victims = runner.worker_pids
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            async with asyncio.timeout(60):
                await scheduler.wait_all_final()
    assert runner.statistics().restarts >= 1
    assert not set(victims) & set(runner.worker_pids)
    assert lane.retries_total >= 1
    assert [job.status for job in jobs] == [job.expected for job in jobs]
    assert scheduler.counters["outputs_collected"] == 10


async def test_a_hung_isolated_call_is_cut_off_by_killing_its_worker(tmp_path: Path) -> None:
    config = DiracSimConfig(
        latency_median=0.01, queue_time=0.1, completing_time=0.05, output_latency=0.01, hang_rate=1.0
    )
    async with DiracSimProcess(config) as service:
        backend = DiracSimBackend.isolated(service.port, capabilities=replace(CAPS, call_timeout=0.3))
        runner = backend.runner
        assert isinstance(runner, ProcessRunner)
        async with Scheduler([backend], bus=EventBus(), outputs=OutputSink(tmp_path / "out"), config=FAST) as scheduler:
            jobs = await scheduler.submit(grid_specs(5))
            await until(lambda: runner.statistics().restarts >= 2, within=10)
            await service.client().call("configure", {"hang_rate": 0.0})
            async with asyncio.timeout(60):
                await scheduler.wait_all_final()
    assert [job.status for job in jobs] == [job.expected for job in jobs]


async def test_a_lane_keeps_within_the_services_calls_per_minute(
    dirac_service: DiracSimProcess, tmp_path: Path
) -> None:
    # One job per call and an allowance of 3 calls a minute: the first 3 polls go out at once,
    # the others wait for the oldest call to leave the minute, shown in the lane's health.
    caps = replace(CAPS, max_batch=1, max_concurrency=4, max_calls_per_minute=3.0)
    backend = DiracSimBackend.asynchronous(dirac_service.port, name="dirac-sim", capabilities=caps)
    bus = EventBus()
    async with Scheduler([backend], bus=bus, outputs=OutputSink(tmp_path / "out"), config=FAST) as scheduler:
        await scheduler.submit(grid_specs(6))
        lane = scheduler.lanes["dirac-sim"]
        await until(lambda: lane.calls_total >= 3, within=10)
        await asyncio.sleep(1.0)
        assert lane.calls_total == 3
        record = lane.record(time.monotonic())
        assert record.queued_ops >= 3
        assert record.calls_per_minute == 3
        assert record.max_calls_per_minute == 3
