"""Fixtures shared by every test directory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from monitor_core.sim import DiracSimConfig, DiracSimProcess

pytest_plugins = ["tests.slurm_cluster"]


@pytest.fixture
async def dirac_service() -> AsyncIterator[DiracSimProcess]:
    """A simulated DIRAC service process on a free loopback port, fast and fault-free."""
    service = DiracSimProcess(
        DiracSimConfig(
            latency_median=0.02, latency_per_job=0.0, queue_time=0.3, completing_time=0.1, output_latency=0.01
        )
    )
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def until(predicate: Callable[[], object], within: float = 10.0) -> None:
    """Wait until ``predicate()`` holds, checking between event-loop turns.

    Tests observe state they do not own, so there is no event to wait on; this is the one
    place that polls for it.
    """
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - see the docstring
            await asyncio.sleep(0.005)
