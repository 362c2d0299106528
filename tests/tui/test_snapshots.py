"""Snapshot tests of each main view over the fixed session (review the report before --snapshot-update)."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input

from ganga_tui.app import GangaMonitorApp

from .conftest import settle
from .snapshot_apps import fixed_app

SIZE = (120, 40)


async def _ready(pilot: Pilot[Any]) -> None:
    assert isinstance(pilot.app, GangaMonitorApp)
    pilot.app.main_screen.query_one("#filter", Input).cursor_blink = False
    await settle(pilot)


class TestMainScreen:
    def test_dashboard(self, snap_compare: Any) -> None:
        assert snap_compare(fixed_app(), run_before=_ready, terminal_size=SIZE)

    def test_dashboard_at_80x24(self, snap_compare: Any) -> None:
        assert snap_compare(fixed_app(), run_before=_ready, terminal_size=(80, 24))


class TestFilteredTable:
    def test_running_jobs_of_one_batch(self, snap_compare: Any) -> None:
        async def run_before(pilot: Pilot[Any]) -> None:
            await _ready(pilot)
            await pilot.press("slash", *"s:running batch001", "enter")
            await settle(pilot)

        assert snap_compare(fixed_app(), run_before=run_before, terminal_size=SIZE)

    def test_while_typing_the_box_and_the_table_show_where_focus_is(self, snap_compare: Any) -> None:
        # A focus change repaints only what it restyles (the box, the table's cursor), not the screen.
        async def run_before(pilot: Pilot[Any]) -> None:
            await _ready(pilot)
            await pilot.press("slash", *"batch001")
            await settle(pilot)

        assert snap_compare(fixed_app(), run_before=run_before, terminal_size=SIZE)


class TestJobDetail:
    def test_detail_of_a_job_with_history(self, snap_compare: Any) -> None:
        async def run_before(pilot: Pilot[Any]) -> None:
            await _ready(pilot)
            await pilot.press("down", "down", "enter")
            await settle(pilot)

        assert snap_compare(fixed_app(), run_before=run_before, terminal_size=SIZE)


class TestHelp:
    def test_help_lists_the_keys(self, snap_compare: Any) -> None:
        async def run_before(pilot: Pilot[Any]) -> None:
            await _ready(pilot)
            await pilot.press("question_mark")
            await pilot.pause()

        assert snap_compare(fixed_app(), run_before=run_before, terminal_size=SIZE)


class TestWarnings:
    def test_warnings_view(self, snap_compare: Any) -> None:
        async def run_before(pilot: Pilot[Any]) -> None:
            await _ready(pilot)
            await pilot.press("w")
            await settle(pilot)

        assert snap_compare(fixed_app(), run_before=run_before, terminal_size=SIZE)
