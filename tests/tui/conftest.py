"""TUI test set-up: fixed time zone (state history shows clock times), and app helpers."""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from textual.pilot import Pilot

os.environ["TZ"] = "UTC"
time.tzset()


async def settle(pilot: Pilot[object], *, full: bool = True) -> None:
    """Wait until the app folded every fixed event in and repainted, then run the upkeep once."""
    from ganga_tui.app import GangaMonitorApp

    app = pilot.app
    assert isinstance(app, GangaMonitorApp)
    source = app.source
    drained = getattr(source, "drained", None)
    if drained is not None:
        await drained.wait()
    while not app.caught_up:
        await pilot.pause(0.01)
    await pilot.pause()
    app.update_view(full=full)
    await wait_for_commands(pilot)


async def wait_for_commands(pilot: Pilot[object]) -> None:
    """Wait for every worker but the bus reader (which lasts as long as the source)."""
    app = pilot.app
    others = [worker for worker in app.workers if worker.group != "bus"]
    if others:  # an empty list would mean "every worker", the bus reader included
        await app.workers.wait_for_complete(others)
    await pilot.pause()


async def wait_for(pilot: Pilot[object], condition: Callable[[], bool], *, rounds: int = 3000) -> None:
    """Let the app run until ``condition`` holds (each round yields to it once; no wall-clock limit)."""
    for _ in range(rounds):
        if condition():
            return
        await pilot.pause(0.01)
    pytest.fail("the condition never held")


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: type[Any], name: str) -> list[object]:
    """Each call of the method ``owner.name`` from now on, as the object it was called on; the calls still run."""
    calls: list[object] = []
    method = getattr(owner, name)
    if inspect.iscoroutinefunction(method):

        async def counted_async(self: object, *args: Any, **kwargs: Any) -> Any:
            calls.append(self)
            return await method(self, *args, **kwargs)

        monkeypatch.setattr(owner, name, counted_async)
    else:

        def counted(self: object, *args: Any, **kwargs: Any) -> Any:
            calls.append(self)
            return method(self, *args, **kwargs)

        monkeypatch.setattr(owner, name, counted)
    return calls
