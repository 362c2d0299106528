"""Keys that arrive while the app is busy.

The detail opens safely mid-repaint, typed text reaches the filter, End stays at the end.
"""

from __future__ import annotations

import pytest
from textual import events
from textual._compositor import Compositor
from textual.screen import Screen
from textual.widgets import Input, Static
from textual.widgets._footer import FooterKey

from ganga_tui.app import GangaMonitorApp
from ganga_tui.screens.job_detail import JobDetailScreen
from ganga_tui.widgets.job_detail import JobDetail
from ganga_tui.widgets.job_table import JobTable
from ganga_tui.widgets.key_footer import KeyFooter
from monitor_core import JobChanged, JobStatus

from .conftest import count_calls, settle, wait_for
from .fixed_data import NOW, FixedSource, frozen_clock, session_events

SIZE = (120, 40)


async def test_repaints_between_opening_the_detail_and_its_compose_leave_it_alone() -> None:
    app = GangaMonitorApp(FixedSource(session_events()), clock=frozen_clock, tick=3600)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        # Enter pushes the screen; its compose runs later, on its own message loop. A fold of
        # new events and the 1 s tick can both repaint in between.
        app.open_job("3")
        screen = app.screen
        assert isinstance(screen, JobDetailScreen)
        assert not screen.is_mounted
        app.pending.append(
            JobChanged(
                at=NOW, job_id="16", backend="dirac-sim", old=JobStatus.RUNNING, new=JobStatus.FAILED, source="poll"
            )
        )
        app.fold_pending()
        app.update_view()
        await wait_for(pilot, lambda: screen.is_mounted)
        assert app.return_code is None
        assert screen.query_one(JobDetail).job_id == "3"
        app.update_view()  # once composed, it is repainted as before
        await pilot.press("escape")
        assert app.screen is app.main_screen
        assert app.store.counts[JobStatus.FAILED] == 9


async def test_text_typed_right_after_slash_goes_to_the_filter_box() -> None:
    app = GangaMonitorApp(FixedSource(session_events()), clock=frozen_clock, tick=3600)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        # As a terminal delivers "/batch" typed fast: every key queued before the app reads one.
        for key, character in [("slash", "/"), *((c, c) for c in "batch")]:
            app.post_message(events.Key(key, character))
        box = app.main_screen.query_one("#filter", Input)
        await wait_for(pilot, lambda: box.value == "batch")
        assert app.focused is box
        assert app.store.filter.backends == frozenset()  # "b" did not cycle the backend filter
        await pilot.press("slash")
        assert box.value == "batch/"  # in the box, "/" is text


async def test_end_keeps_the_last_row_on_screen_when_the_table_shrinks() -> None:
    app = GangaMonitorApp(FixedSource(session_events()), clock=frozen_clock, tick=3600)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        jobs = app.main_screen.query_one(JobTable)
        await pilot.press("end")
        # Panels above the table grow after start (backends and groups appear): two lines fewer.
        app.main_screen.query_one("#counts", Static).styles.height = 3
        await pilot.pause()
        await pilot.pause()
        last_line = jobs.render_line(jobs.scrollable_content_region.height - 1).text
        assert last_line.split()[0] == "60"


async def test_the_detail_screen_is_kept_and_shows_the_next_job_from_scratch() -> None:
    app = GangaMonitorApp(FixedSource(session_events()), clock=frozen_clock, tick=3600)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_job("3")
        first = app.screen
        await wait_for(pilot, lambda: first.is_mounted)
        first.query_one(JobDetail).show_output("tail of job 3")
        await pilot.press("escape")
        assert app.screen is app.main_screen
        app.open_job("16")
        await pilot.pause()
        assert app.screen is first, "the same screen, not a new one per Enter"
        detail = first.query_one(JobDetail)
        assert detail.job_id == "16"
        assert "job 16" in str(first.query_one("#detail-title", Static).content)
        assert "tail of job 3" not in detail.output
        await pilot.press("escape")
        assert app.screen is app.main_screen


async def test_opening_and_leaving_a_job_rebuilds_no_footer(monkeypatch: pytest.MonkeyPatch) -> None:
    rebuilt = count_calls(monkeypatch, KeyFooter, "recompose")
    app = GangaMonitorApp(FixedSource(session_events()), clock=frozen_clock, tick=3600)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        rebuilt.clear()
        for _ in range(2):
            await pilot.press("enter")
            await settle(pilot)
            assert isinstance(app.screen, JobDetailScreen)
            await pilot.press("escape")
            await settle(pilot)
        assert rebuilt == [], "the same keys, built again"
        shown = [key.key for key in app.main_screen.query_one(KeyFooter).query(FooterKey)]
        assert "slash" in shown, "the dashboard's own keys, not those it had while covered"


async def test_moving_focus_to_the_filter_and_back_redraws_no_whole_screen(monkeypatch: pytest.MonkeyPatch) -> None:
    full = count_calls(monkeypatch, Compositor, "render_full_update")
    app = GangaMonitorApp(FixedSource(session_events()), clock=frozen_clock, tick=3600)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        full.clear()
        await pilot.press("slash")
        await settle(pilot)
        assert isinstance(app.focused, Input)
        await pilot.press(*"batch001", "enter")
        await settle(pilot)
        assert isinstance(app.focused, JobTable)
        assert full == [], "a whole 200x50 frame for a move of focus"


async def test_typing_a_filter_arranges_nothing_and_a_long_one_scrolls_in_its_box(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arranged = count_calls(monkeypatch, Screen, "_refresh_layout")
    app = GangaMonitorApp(FixedSource(session_events()), clock=frozen_clock, tick=3600)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        await settle(pilot)
        arranged.clear()
        # The table empties at the first letter (its scroll height changes, its scroll bar goes);
        # then only the box's text grows.
        await pilot.press(*"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzxyz")
        await settle(pilot)
        assert len(arranged) <= 2, "a layout pass of the whole screen for each letter typed"
        box = app.main_screen.query_one("#filter", Input)
        assert box.scroll_x > 0
        assert box.render_line(0).text.rstrip().endswith("zzzxyz")
