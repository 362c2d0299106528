"""Delta polls miss nothing.

The property test drives the backend's status cache against a model of DiracX's search:
updates are stamped when handled and become visible when committed (a moment later, maybe
in the middle of a poll), the service's clock differs from ours by an error we only know
the bounds of, and ``LastUpdateTime gt`` matches whole seconds, as DiracX 0.7 does. After
every delta the cache must hold, for every job, the last version committed before the
delta looked. The second test checks the same against the real service while pilots move
jobs during the polls.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor_core import JobSpec
from monitor_core.backends.diracx_delta import StatusCache, format_since
from monitor_core.backends.diracx_states import DIRACX_STATUS_MAPPING, DIRACX_TRANSITIONS, is_reachable
from monitor_core.sim.diracx_pilots import JobPlan, PilotConfig

from .conftest import DiracxService

MARGIN = 4.0
IN_FLIGHT = 2.0
"""Longest time between DiracX stamping an update and committing it (the model's bound)."""


@dataclass(frozen=True)
class Version:
    status: str
    stamped: float
    committed: float


def row(job_id: int, version: Version) -> dict[str, Any]:
    stamp = datetime.fromtimestamp(version.stamped, UTC).isoformat().replace("+00:00", "Z")
    return {"JobID": job_id, "Status": version.status, "MinorStatus": "", "LastUpdateTime": stamp}


class ModelService:
    """DiracX's job table as the search sees it at a moment."""

    def __init__(self, jobs: int) -> None:
        self.versions: dict[int, list[Version]] = {j: [Version("Received", 0.0, 0.0)] for j in range(1, jobs + 1)}

    def latest(self, job_id: int, at: float) -> Version:
        return max((v for v in self.versions[job_id] if v.committed <= at), key=lambda v: v.stamped)

    def search_all(self, at: float) -> list[dict[str, Any]]:
        return [row(j, self.latest(j, at)) for j in self.versions]

    def search_since(self, since: str, at: float) -> list[dict[str, Any]]:
        # "gt S" at second resolution: stamped at or after S + 1 s (DiracX 0.7's datetime search).
        start = datetime.fromisoformat(since).replace(tzinfo=UTC).timestamp() + 1
        return [row(j, v) for j in self.versions if (v := self.latest(j, at)).stamped >= start]


updates = st.lists(
    st.tuples(
        st.integers(1, 8),  # job
        st.floats(0.0, 60.0),  # when DiracX stamps it
        st.floats(0.0, IN_FLIGHT),  # until it commits
        st.integers(0, 6),  # which legal next status
    ),
    max_size=60,
)
polls = st.lists(st.tuples(st.floats(0.0, 70.0), st.floats(0.0, 1.5)), min_size=1, max_size=25)


@settings(max_examples=300, deadline=None)
@given(updates=updates, polls=polls, skew_error=st.floats(-2.0, 0.5), base=st.floats(1.7e9, 1.8e9))
def test_delta_reads_miss_nothing(
    updates: list[tuple[int, float, float, int]], polls: list[tuple[float, float]], skew_error: float, base: float
) -> None:
    service = ModelService(8)
    # Build each job's history along DIRAC's state machine, stamped in time order.
    for job_id, stamped, delay, pick in sorted(updates, key=lambda u: u[1]):
        history = service.versions[job_id]
        choices = sorted(DIRACX_TRANSITIONS[history[-1].status])
        if not choices:
            continue
        stamped = max(base + stamped, history[-1].stamped + 1e-3)
        history.append(Version(choices[pick % len(choices)], stamped, stamped + delay))
    cache = StatusCache(margin=MARGIN, full_every=10**6)
    cache.track(service.versions)
    first, looked = True, base
    for began, duration in sorted(polls):
        # One poll after another; the search's snapshot is taken somewhere in the call.
        began = max(base + began, looked)
        looked = began + duration
        estimate = began + skew_error  # our idea of the service's clock when the call began
        cache.read_started(estimate)
        if first:
            assert not cache.merge(service.search_all(looked), full=True)
            first = False
        else:
            assert not cache.merge(service.search_since(format_since(cache.since()), looked), full=False)
            cache.delta_succeeded(estimate)
        for job_id in service.versions:
            truth = service.latest(job_id, looked)
            held = cache.states[job_id]
            assert (held.status, held.updated) == (truth.status, pytest.approx(truth.stamped, abs=1e-5)), job_id


def test_every_status_is_mapped_and_dirac_forbids_going_back() -> None:
    assert set(DIRACX_STATUS_MAPPING) == set(DIRACX_TRANSITIONS)
    assert is_reachable("Running", "Received")  # rescheduled
    assert is_reachable("Stalled", "Running")  # a stalled job may recover
    assert is_reachable("Received", "Done")  # several steps between two polls
    assert not is_reachable("Done", "Running")
    assert not any(is_reachable(status, "Submitting") for status in DIRACX_TRANSITIONS if status != "Submitting")


def test_the_horizon_is_floored_to_whole_seconds_and_one_more() -> None:
    assert format_since(datetime(2026, 1, 2, 3, 4, 5, 900_000, tzinfo=UTC).timestamp()) == "2026-01-02T03:04:04"
    assert math.isclose(StatusCache(margin=3).margin, 3)


@pytest.mark.diracx
async def test_delta_answers_are_never_older_than_a_full_read_made_before_them(diracx_service: DiracxService) -> None:
    # No sharing of a delta between polls here: each answer must be as fresh as its call.
    delta = diracx_service.backend(full_every=10**6, margin=3.0, delta_share=0.0)
    full = diracx_service.backend(delta=False)
    plans = {f"dl-{i}": JobPlan(0.5 + (i % 10) * 0.4, "failed" if i % 9 == 0 else "done") for i in range(120)}
    fleet = diracx_service.fleet(
        PilotConfig(slots=60, scan_interval=0.2, heartbeat_interval=1.0),
        plan=lambda _, name: plans.get(name, JobPlan(0.5)),
    )
    try:
        ids = await delta.submit([JobSpec(name, "diracx") for name in plans])
        full.cache.track(int(i) for i in ids)
        await delta.poll(ids)  # the first read is a full one; every later one is a delta
        checked = 0
        async with fleet, asyncio.timeout(90):
            while True:
                before = {r.backend_id: r.info.split(":")[0] for r in (await full.poll(ids)).reports}
                result = await delta.poll(ids)
                assert not result.rejections
                after = {r.backend_id: r.info.split(":")[0] for r in result.reports}
                assert after.keys() == before.keys() == set(ids)
                for job_id in ids:
                    assert is_reachable(before[job_id], after[job_id]), (job_id, before[job_id], after[job_id])
                checked += 1
                if all(status in ("Done", "Failed") for status in after.values()):
                    break
                await asyncio.sleep(0.1)
        assert checked > 5
        assert delta.counters.confirmed_full == len(ids)  # one full read, then deltas only
        # Quiet now: the deltas agree with a full read exactly.
        final_full = {r.backend_id: r.info for r in (await full.poll(ids)).reports}
        final_delta = {r.backend_id: r.info for r in (await delta.poll(ids)).reports}
        assert final_delta == final_full
    finally:
        await fleet.close()
        await delta.close()
        await full.close()
