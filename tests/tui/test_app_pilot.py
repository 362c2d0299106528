"""Pilot tests over the fixed session: every view and action, asserted on widget state."""

from __future__ import annotations

import pytest
from rich.console import Console
from textual.command import CommandPalette
from textual.widget import Widget
from textual.widgets import Input, Sparkline, Static

from ganga_tui.app import GangaMonitorApp
from ganga_tui.job_store import WarningKind
from ganga_tui.screens.help import HelpScreen
from ganga_tui.screens.job_detail import JobDetailScreen
from ganga_tui.screens.prompts import IntervalPrompt
from ganga_tui.screens.warnings import WarningsScreen
from ganga_tui.widgets.backends_panel import BackendRow, BackendsPanel
from ganga_tui.widgets.help_table import KeyHelp, describe_keys
from ganga_tui.widgets.job_detail import JobDetail
from ganga_tui.widgets.job_table import JobTable
from ganga_tui.widgets.op_queue import OpQueue
from ganga_tui.widgets.warnings_table import WarningsTable
from monitor_core import CollectOutput, JobChanged, JobStatus, OpFinished, OpKind, OpQueued, OpRecord, OpState

from .conftest import settle, wait_for_commands
from .fixed_data import NOW, FixedSource
from .snapshot_apps import fixed_app

SIZE = (120, 40)


def table(app: GangaMonitorApp) -> JobTable:
    return app.main_screen.query_one(JobTable)


def plain(widget: Static) -> str:
    """What a static shows, as plain text (tables included)."""
    console = Console(width=200, color_system=None)
    with console.capture() as capture:
        console.print(widget.content)
    return capture.get()


def status_bar(app: GangaMonitorApp) -> str:
    return str(app.main_screen.query_one("#status-bar", Static).render())


def counts_line(app: GangaMonitorApp) -> str:
    return str(app.main_screen.query_one("#counts", Static).render())


async def test_dashboard_shows_backends_jobs_operations_and_progress() -> None:
    app = fixed_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        jobs = table(app)
        assert jobs.store.row_count == 60
        assert jobs.render_line(1).text.split()[:3] == ["1", "dirac-si…tch000.1", "dirac-sim"]
        assert "60 jobs" in counts_line(app)
        assert "running 20" in counts_line(app)
        rows = {row.backend: row for row in app.query(BackendRow)}
        assert set(rows) == {"local", "dirac-sim"}
        assert rows["dirac-sim"].has_class("-lagging")
        assert not rows["local"].has_class("-lagging")
        assert app.query_one(BackendsPanel).border_subtitle == "lagging: dirac-sim"
        sparkline = rows["dirac-sim"].query_one(Sparkline)
        assert sparkline.data is not None
        assert list(sparkline.data)[-1] == 24.0
        assert "90/600" in str(rows["dirac-sim"].query_one(".backend--right", Static).render())
        ops = app.query_one(OpQueue)
        # Live operations oldest first, then the finished one, fading.
        assert ops.shown_ids == (501, 502, 503, 504, 500)
        assert ops.border_title == "operations: 2 in flight, 2 queued"
        assert "32/60 final" in status_bar(app)
        assert "3 warnings" in status_bar(app)


async def test_warnings_are_marked_in_the_table_and_listed_on_their_view() -> None:
    app = fixed_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        store = app.store
        assert store.rows["22"].warnings == {WarningKind.UNCONFIRMED}
        assert store.rows["40"].warnings == {WarningKind.BACKEND_DONE}
        assert table(app).render_line(22).text.startswith("?")
        await pilot.press("w")
        assert isinstance(app.screen, WarningsScreen)
        warnings = app.screen.query_one(WarningsTable)
        assert {key.value for key in warnings.rows} == {"22", "39", "40"}
        warnings.move_cursor(row=warnings.get_row_index("22"))
        await pilot.press("enter")
        assert isinstance(app.screen, JobDetailScreen)
        assert app.screen.job_id == "22"
        await pilot.press("escape", "escape")
        assert app.screen is app.main_screen


async def test_incremental_filter_narrows_as_you_type_and_escape_clears_it() -> None:
    app = fixed_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        box = app.main_screen.query_one("#filter", Input)
        assert box.has_focus
        assert box.placeholder.startswith("filter: ")  # the words it takes, while it has focus
        await pilot.press(*"s:failed")
        assert app.store.row_count == 8
        await pilot.press(*" b:local")
        assert app.store.row_count == 4
        assert all(app.store.get_row_at(i).backend == "local" for i in range(4))
        await pilot.press("enter")
        assert table(app).has_focus
        assert "4 of 60 shown" in counts_line(app)
        await pilot.press("escape")
        assert app.store.row_count == 60
        assert box.value == ""


async def test_free_text_search_matches_names() -> None:
    app = fixed_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"batch000.1", "enter")
        ids = [app.store.get_row_at(i).job_id for i in range(app.store.row_count)]
        assert ids == ["1", "10", "11", "12", "13", "14", "15", "16", "17", "18", "19"]


async def test_state_and_backend_filters_cycle_on_keys() -> None:
    app = fixed_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f")
        assert app.store.filter.statuses == {JobStatus.RUNNING}
        assert app.store.row_count == 20
        await pilot.press("f")
        assert app.store.filter.statuses == {JobStatus.SUBMITTED}
        await pilot.press("b")
        assert app.store.filter.backends == {"dirac-sim"}
        assert app.main_screen.query_one("#filter", Input).value == "b:dirac-sim s:submitted"
        await pilot.press("b", "b")
        assert app.store.filter.backends == frozenset()
        await pilot.press("f", "f", "f", "f")
        assert not app.store.filter.active
        assert app.store.row_count == 60


async def test_sort_cycles_columns_and_reverses() -> None:
    app = fixed_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("S")
        assert app.store.get_row_at(0).job_id == "60"
        await pilot.press("S", "s", "s", "s")
        assert app.store.sort_key == "status"
        assert app.store.get_row_at(0).status == JobStatus.SUBMITTED
        assert "status▲" in table(app).render_line(0).text
        await pilot.press("s", "s", "s")
        assert app.store.sort_key == "warnings"
        assert app.store.get_row_at(0).warnings


async def test_cursor_keys_and_the_detail_screen() -> None:
    app = fixed_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        jobs = table(app)
        await pilot.press("down", "down", "j", "k")
        assert jobs.cursor_job == "3"
        await pilot.press("end")
        assert jobs.cursor_job == "60"
        assert jobs.scroll_offset.y > 0
        last_line = jobs.render_line(jobs.scrollable_content_region.height - 1).text
        assert last_line.split()[0] == "60"
        await pilot.press("home", "down", "down", "enter")
        assert isinstance(app.screen, JobDetailScreen)
        await wait_for_commands(pilot)
        detail = app.screen.query_one(JobDetail)
        assert "dirac-sim-batch000.3" in plain(detail.summary)
        history = plain(detail.history)
        assert "submitted" in history
        assert "completing" in history
        assert "fetch" in history
        # The job is final, so its output tail was asked for; a recording refuses.
        assert detail.output == "no output: read-only: a fixed recording"
        assert app.last_ack is not None
        assert app.last_ack[0] == "output of job 3"
        await pilot.press("escape")
        assert app.screen is app.main_screen


async def test_detail_lists_operations_and_errors_of_the_job() -> None:
    app = fixed_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.source, FixedSource)
        source = app.source
        source.push(
            OpQueued(
                at=NOW,
                op=OpRecord(
                    op_id=900,
                    kind=OpKind.POLL,
                    backend="dirac-sim",
                    job_ids=("16",),
                    state=OpState.QUEUED,
                    enqueued_at=NOW,
                ),
            )
        )
        source.push(
            OpFinished(
                at=NOW, op_id=900, backend="dirac-sim", kind=OpKind.POLL, outcome="timeout", error="no answer in 30s"
            )
        )
        await settle(pilot)
        app.open_job("16")
        await pilot.pause()
        detail = app.screen.query_one(JobDetail)
        assert "900" in plain(detail.operations)
        assert "timeout" in plain(detail.operations)
        assert "no answer in 30s" in plain(detail.errors)


async def test_help_lists_every_key_of_every_context() -> None:
    app = fixed_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        listed = set(app.screen.query_one(KeyHelp).keys())
        for bindings in (GangaMonitorApp.BINDINGS, JobTable.BINDINGS, JobDetailScreen.BINDINGS):
            for binding in bindings:
                assert describe_keys(binding.key) in listed  # type: ignore[union-attr]
        assert {"/", "?", ":", "q"} <= listed
        await pilot.press("escape")
        assert app.screen is app.main_screen


async def test_freezing_the_view_holds_the_screen_while_events_still_arrive() -> None:
    app = fixed_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("space")
        assert app.view_paused
        assert "VIEW FROZEN" in status_bar(app)
        assert app.main_screen.has_class("-frozen")
        assert isinstance(app.source, FixedSource)
        app.source.push(
            JobChanged(
                at=NOW, job_id="16", backend="dirac-sim", old=JobStatus.RUNNING, new=JobStatus.FAILED, source="poll"
            )
        )
        await settle(pilot)
        assert app.store.counts[JobStatus.FAILED] == 9
        assert "failed 8" in counts_line(app)
        await pilot.press("space")
        assert not app.view_paused
        assert "failed 9" in counts_line(app)


async def test_notifications_ring_on_failures_when_switched_on() -> None:
    app = fixed_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.source, FixedSource)
        app.source.push(
            JobChanged(
                at=NOW, job_id="16", backend="dirac-sim", old=JobStatus.RUNNING, new=JobStatus.FAILED, source="poll"
            )
        )
        await settle(pilot)
        assert app.notifier.sent == []
        await pilot.press("n")
        assert app.notifications
        assert "notify on" in status_bar(app)
        app.source.push(
            JobChanged(
                at=NOW, job_id="17", backend="dirac-sim", old=JobStatus.RUNNING, new=JobStatus.FAILED, source="poll"
            )
        )
        await settle(pilot)
        assert app.notifier.sent == [("1 job failed", "17")]


async def test_events_are_folded_in_batches_at_most_one_a_frame() -> None:
    app = fixed_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert 1 <= app.folds < app.store.events
        assert app.caught_up
        assert app.behind == 0


async def test_narrow_terminal_hides_the_side_panel_until_asked() -> None:
    app = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        side = app.main_screen.query_one("#side")
        assert app.main_screen.has_class("-narrow")
        assert not side.display
        await pilot.press("o")
        assert side.display
        await pilot.press("o")
        assert not side.display
        assert table(app).render_line(0).text.startswith("!")


async def test_command_palette_runs_monitor_commands() -> None:
    app = fixed_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("colon")
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"Show only failed jobs")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(pilot)
        assert app.store.filter.statuses == {JobStatus.FAILED}


async def test_commands_on_a_read_only_source_show_the_refusal() -> None:
    app = fixed_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press(
            "down", "down", "down", "down", "down", "down", "down", "down", "down", "down", "down", "down"
        )
        await pilot.press("down", "down", "down", "r")
        await wait_for_commands(pilot)
        assert app.last_ack is not None
        description, ack = app.last_ack
        assert description == "refresh job 16"
        assert not ack.ok
        assert "✗ refresh job 16" in status_bar(app)
        await pilot.press("i")
        assert isinstance(app.screen, IntervalPrompt)
        await pilot.press("escape")
        assert app.screen is app.main_screen


async def test_results_lag_fetches_and_the_collect_bound_are_shown_beside_status_lag() -> None:
    app = fixed_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        rows = {row.backend: row for row in app.query(BackendRow)}
        left = plain(rows["dirac-sim"].query_one(".backend--left", Static))
        assert left.split()[-2:] == ["24s", "42s"], "status lag, then results lag"
        assert "4/6+35" in plain(rows["dirac-sim"].query_one(".backend--right", Static))
        results = rows["dirac-sim"].query_one(".backend--results", Sparkline)
        assert max(results.data or [0]) == 42.0
        overall = app.main_screen.query_one("#overall")
        assert "collect ≥12s" in plain_render(overall)


def plain_render(widget: Widget) -> str:
    """The widget's lines as drawn (line-API widgets render no renderable)."""
    return "\n".join(widget.render_line(y).text for y in range(widget.size.height))


async def test_c_collects_the_highlighted_jobs_outputs_and_the_detail_of_a_completing_job_asks_for_them() -> None:
    app = fixed_app()
    source = app.source
    assert isinstance(source, FixedSource)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table(app).cursor_row = app.store.index_of("38") or 0
        await pilot.press("c")
        await wait_for_commands(pilot)
        assert source.sent == [CollectOutput(job_id="38", command_id=source.sent[0].command_id)]
        await pilot.press("enter")
        await wait_for_commands(pilot)
        detail = plain(app.screen.query_one(JobDetail).summary)
        assert "not collected: output fetch timed out 5 times (c to try again)" in detail
        await pilot.press("escape")
        table(app).cursor_row = app.store.index_of("39") or 0
        await pilot.press("enter")  # job 39 is completing: opening it asks for its outputs first
        await wait_for_commands(pilot)
        last = source.sent[-1]
        assert isinstance(last, CollectOutput)
        assert last.job_id == "39"
        await pilot.press("c")  # in the detail view too
        await wait_for_commands(pilot)
        kinds = [type(c).__name__ for c in source.sent]
        assert kinds == ["CollectOutput", "TailOutput", "CollectOutput", "CollectOutput"]


async def test_a_timer_that_fires_while_the_app_shuts_down_paints_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    app = fixed_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        # Textual stops running, then removes the dashboard's widgets, then empties the stack;
        # the tick, a fold or a repaint due meanwhile must find nothing to do, not fail.
        monkeypatch.setattr(GangaMonitorApp, "is_running", property(lambda self: False))
        await app.main_screen.query_one("#counts", Static).remove()
        app._on_tick()
        app.store_changed()
        app._repaint_panels(now=True)
        assert not app.showing
        monkeypatch.undo()
