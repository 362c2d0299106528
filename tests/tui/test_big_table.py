"""The job table with 100,000 jobs: it fills, scrolls, filters and sorts (no timing asserts)."""

from __future__ import annotations

import gc
import time

import pytest
from textual.screen import Screen

from ganga_tui.app import GangaMonitorApp
from ganga_tui.widgets.job_table import JobTable
from monitor_core import BackendRecord, JobChanged, JobRecord, JobStatus, Snapshot

from .conftest import count_calls, settle
from .fixed_data import NOW, FixedSource, frozen_clock

pytestmark = pytest.mark.timeout(120)

JOBS = 100_000
STATUSES = (JobStatus.SUBMITTED, JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.FAILED)


def big_snapshot() -> Snapshot:
    jobs = tuple(
        JobRecord(
            job_id=str(i),
            backend="dirac-sim" if i % 10 else "local",
            status=STATUSES[i % 4],
            name=f"batch{i // 1000:03d}.{i % 1000}",
            group=f"batch{i // 1000:03d}",
            status_since=NOW - 60,
            last_confirmed=NOW - (i % 30),
        )
        for i in range(1, JOBS + 1)
    )
    backends = (BackendRecord(name="dirac-sim", poll_interval=60.0), BackendRecord(name="local", poll_interval=60.0))
    return Snapshot(at=NOW, session="big", jobs=jobs, backends=backends)


async def test_a_hundred_thousand_jobs_fill_scroll_filter_and_sort(monkeypatch: pytest.MonkeyPatch) -> None:
    source = FixedSource([big_snapshot()])
    app = GangaMonitorApp(source, clock=frozen_clock, tick=3600)
    thresholds = gc.get_threshold()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        # What decoding the snapshot freed went back to the system at once, off the loop.
        assert app._snapshot_trim is not None
        assert isinstance(await app._snapshot_trim, bool)
        # So many jobs: the collector's full passes run on the app's schedule, not its counter's.
        assert app.gc_pace is not None
        assert gc.get_threshold()[2] > 100 * thresholds[2]
        # The tick collects at a quiet moment once the interval has passed, and not before.
        app._on_tick()
        assert app.gc_pace.collections == 0
        assert app._trim is None
        app._collected_at -= 60
        app._on_tick()
        assert app.gc_pace.collections == 1
        # And what it freed goes back to the system, off the loop.
        assert app._trim is not None
        assert isinstance(await app._trim, bool)
        # A sweep of the frozen objects too, once due, waits for a pause in the keys...
        app._swept_at -= 400
        app._collected_at -= 60
        app.input_at = time.monotonic() - 0.5  # a key half a second ago: the tick runs, a sweep waits
        app._on_tick()
        assert (app.gc_pace.collections, app.gc_pace.sweeps) == (2, 0)
        app._collected_at -= 60
        app.input_at -= 5
        app._on_tick()
        assert (app.gc_pace.collections, app.gc_pace.sweeps) == (3, 1)
        # ...but not for ever.
        app._swept_at -= 700
        app._collected_at -= 60
        app.input_at = time.monotonic() - 0.5
        app._on_tick()
        assert app.gc_pace.sweeps == 2
        jobs = app.main_screen.query_one(JobTable)
        assert app.store.row_count == JOBS
        assert jobs.virtual_size.height == JOBS + 1
        await pilot.press("end")
        assert jobs.cursor_job == str(JOBS)
        bottom = jobs.scrollable_content_region.height - 1
        assert jobs.render_line(bottom).text.split()[0] == str(JOBS)
        await pilot.press("pageup")
        assert jobs.cursor_job == str(JOBS - bottom)
        assert jobs.render_line(1).text.split()[0] == str(JOBS - bottom)
        source.push(
            JobChanged(
                at=NOW, job_id="99999", backend="dirac-sim", old=JobStatus.RUNNING, new=JobStatus.FAILED, source="poll"
            )
        )
        await settle(pilot, full=False)
        assert app.store.rows["99999"].status == JobStatus.FAILED
        assert "failed" in " ".join(
            jobs.render_line(y).text for y in range(1, bottom + 1) if jobs.render_line(y).text.split()[0] == "99999"
        )
        arranged = count_calls(monkeypatch, Screen, "_refresh_layout")
        # Every prefix of the words leaves enough rows for the scroll bar to stay.
        await pilot.press("slash", *"batch05", "enter")
        await settle(pilot)
        assert app.store.row_count == JOBS // 10
        assert arranged == [], "the whole screen arranged again for a change in the number of rows"
        # The scroll bar and the scroll position follow the rows' height all the same.
        assert jobs.virtual_size.height == JOBS // 10 + 1
        assert jobs.vertical_scrollbar.window_virtual_size == JOBS // 10 + 1
        assert jobs.scroll_y <= jobs.max_scroll_y
        assert jobs.cursor_job in [jobs.render_line(y).text.split()[0] for y in range(1, bottom + 1)]
        await pilot.press("escape")
        await settle(pilot)
        assert jobs.vertical_scrollbar.window_virtual_size == JOBS + 1
        assert arranged == []
        await pilot.press("slash", *"s:completed b:local", "enter")
        assert app.store.row_count == JOBS // 20
        await pilot.press("escape", "S")
        assert app.store.get_row_at(0).job_id == str(JOBS)
    assert gc.get_threshold() == thresholds, "the allocator's thresholds are given back when the app ends"
