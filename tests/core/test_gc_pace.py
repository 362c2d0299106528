"""The session's own pace of full garbage collections."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable

from monitor_core._gc_pace import CollectionPace


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _old_cycle(on_collected: Callable[[], object] | None = None) -> weakref.ref[_Node]:
    """A reference cycle that lives in the oldest generation by the time it becomes garbage."""
    first, second = _Node(), _Node()
    first.other, second.other = second, first
    if on_collected is not None:
        weakref.finalize(first, on_collected)
    gc.collect(1)
    gc.collect(1)  # survived twice: now in the oldest generation
    return weakref.ref(first)


async def test_full_collections_run_on_the_schedule_and_thresholds_come_back() -> None:
    before = gc.get_threshold()
    pace = CollectionPace(every=0.05)
    pace.start()
    try:
        assert gc.get_threshold()[:2] == before[:2]
        assert gc.get_threshold()[2] > before[2]
        collected = asyncio.Event()
        cycle = _old_cycle(collected.set)
        # Young collections alone never reach it; the pace's full pass does.
        await asyncio.wait_for(collected.wait(), 5)
        assert cycle() is None
        assert pace.collections >= 1
    finally:
        await pace.aclose()
        gc.unfreeze()
    assert gc.get_threshold() == before


async def test_between_passes_the_oldest_generation_is_left_alone() -> None:
    pace = CollectionPace(every=3600)
    pace.start()
    try:
        cycle = _old_cycle()
        for _ in range(20_000):
            _Node()  # many young collections
        await asyncio.sleep(0)
        assert cycle() is not None
        assert pace.collect() >= 2
        assert cycle() is None
    finally:
        await pace.aclose()
        gc.unfreeze()


async def test_a_pace_without_a_schedule_collects_only_when_asked() -> None:
    before = gc.get_threshold()
    pace = CollectionPace(every=None)
    pace.start()
    try:
        assert gc.get_threshold()[2] > before[2]
        cycle = _old_cycle()
        await asyncio.sleep(0.1)
        assert cycle() is not None, "no pass of its own"
        pace.collect()
        assert cycle() is None
        assert pace.collections == 1
    finally:
        await pace.aclose()
        gc.unfreeze()
    assert gc.get_threshold() == before


async def test_a_cycle_frozen_while_alive_is_found_by_a_sweep_and_not_by_a_pass() -> None:
    pace = CollectionPace(every=None)
    pace.start()
    try:
        first, second = _Node(), _Node()
        first.other, second.other = second, first
        pace.collect()  # alive now: frozen with the survivors, as a screen being looked at is
        cycle = weakref.ref(first)
        del first, second
        pace.collect()
        assert cycle() is not None, "a pass leaves the frozen objects alone"
        assert pace.sweep() >= 2
        assert cycle() is None
        assert (pace.collections, pace.sweeps) == (3, 1)
        assert gc.get_freeze_count() > 0, "what survives a sweep is frozen again"
    finally:
        await pace.aclose()
        gc.unfreeze()
