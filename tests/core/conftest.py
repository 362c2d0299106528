"""Fixtures for scheduler tests: a bus, an outputs directory, a running scheduler."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from monitor_core import EventBus, OutputSink, Scheduler, SchedulerConfig
from monitor_core.backends import Backend

FAST = SchedulerConfig(
    backoff_base=0.02, backoff_cap=0.1, fetch_backoff_cap=0.1, breaker_threshold=3, breaker_reset=0.2, sample_every=0.05
)

MakeScheduler = Callable[..., AbstractAsyncContextManager[Scheduler]]


@pytest.fixture
def make_scheduler(tmp_path: Path) -> MakeScheduler:
    @asynccontextmanager
    async def make(
        backends: Sequence[Backend], config: SchedulerConfig = FAST, **kwargs: object
    ) -> AsyncIterator[Scheduler]:
        async with Scheduler(
            backends,
            bus=EventBus(),
            outputs=OutputSink(tmp_path / "outputs"),
            config=config,
            **kwargs,  # type: ignore[arg-type]
        ) as scheduler:
            yield scheduler

    return make
