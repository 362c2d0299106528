"""The app over real sessions: a scheduler in this process carrying out commands, and the demo in its own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from textual.widgets import Input

from ganga_tui.app import GangaMonitorApp
from ganga_tui.screens.prompts import IntervalPrompt
from ganga_tui.widgets.job_table import JobTable
from monitor_core import EventBus, InProcessSource, JobStatus, OutputSink, Scheduler, SessionConfig
from monitor_core.backends import Capabilities

from ..core.fakes import ScriptedBackend, specs
from .conftest import wait_for, wait_for_commands

pytestmark = pytest.mark.timeout(120)


async def test_keys_pause_resume_refresh_and_set_interval_on_a_real_scheduler(tmp_path: Path) -> None:
    caps = Capabilities(max_batch=10, max_concurrency=2, poll_interval=30.0, call_timeout=2)
    backend = ScriptedBackend("local", caps=caps, timeline=[JobStatus.RUNNING])
    bus = EventBus()
    async with Scheduler([backend], bus=bus, outputs=OutputSink(tmp_path / "out")) as scheduler:
        await scheduler.submit(specs(12, "local"))
        app = GangaMonitorApp(InProcessSource(bus, scheduler))
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: app.store.total == 12 and "local" in app.store.backends)
            app.main_screen.query_one(JobTable).focus()
            await pilot.press("p")
            await wait_for_commands(pilot)
            assert scheduler.lanes["local"].paused
            assert app.last_ack is not None
            assert app.last_ack[1].ok
            assert app.last_ack[1].message == "local paused"
            await wait_for(pilot, lambda: app.store.backends["local"].paused)
            await pilot.press("p")
            await wait_for_commands(pilot)
            assert not scheduler.lanes["local"].paused
            assert app.last_ack[1].message == "local resumed"

            await pilot.press("down", "r")
            await wait_for_commands(pilot)
            assert app.last_ack[0] == "refresh job 2"
            assert app.last_ack[1].ok
            # The refreshed job is polled on its own, ahead of its 30s interval.
            await wait_for(pilot, lambda: ("local-2",) in backend.log.batches)

            await pilot.press("i")
            assert isinstance(app.screen, IntervalPrompt)
            app.screen.query_one(Input).value = ""
            await pilot.press(*"2m", "enter")
            await wait_for_commands(pilot)
            assert scheduler.lanes["local"].base_interval == 120.0
            assert app.last_ack[1].message == "local poll interval set to 120s"
            await pilot.press("q")
        assert app.return_code == 0


async def test_demo_session_runs_in_its_own_process_and_quitting_the_tui_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "run").mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    config = SessionConfig(
        state_dir=tmp_path / "demo",
        jobs=40,
        backends=("local", "dirac-sim"),
        dirac_latency=0.02,
        mean_duration=0.8,
        local_mean_duration=0.3,
        poll_interval=0.3,
        failure_rate=0.2,
    )
    app = GangaMonitorApp(demo=config)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: app.store.total == 40 and app.store.final == 40, rounds=6000)
            assert app.source is not None
            session = app.demo_session
            assert session is not None
            assert session.pid is not None
            assert session.pid != os.getpid()
            assert session.running
            assert f"pid {session.pid}" in app.source.description
            # The status line said what the start was at, up to its last step.
            assert app.demo_step == "submitting 40 jobs"
            assert set(app.store.backends) == {"local", "dirac-sim"}
            assert app.store.counts[JobStatus.COMPLETED] + app.store.counts[JobStatus.FAILED] == 40
            app.main_screen.query_one(JobTable).focus()
            await pilot.press("f", "f", "f", "f", "f")
            assert app.store.row_count == app.store.counts[JobStatus.FAILED]
            await pilot.press("escape", "enter")
            await wait_for(pilot, lambda: "==>" in getattr(app.screen.query_one("#detail"), "output", ""))
            await pilot.press("escape", "q")
    finally:
        await app.close_session()  # a failed assertion must not leave the session running
    assert app.return_code == 0
    assert not session.running, "quitting the TUI stops the session it started"
    assert not session.socket.exists()
    assert "--keep-session" in (app.farewell() or "")
