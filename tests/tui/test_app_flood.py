"""A viewer that cannot keep up says so, skips what it cannot fold, and catches up from a snapshot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from textual.widgets import Static

from ganga_tui.app import GangaMonitorApp
from monitor_core import (
    Command,
    CommandAcked,
    ConnectionChanged,
    Event,
    EventSource,
    JobChanged,
    JobRecord,
    JobStatus,
    Snapshot,
)

from .conftest import wait_for
from .fixed_data import NOW, FixedSource, frozen_clock

S = JobStatus
JOBS = 3000


class FloodSource(EventSource):
    """A session that floods its viewer with job changes, and answers a resync with the state it reached.

    Every job runs, completes and is collected (one in seven fails); the flood is three events a job,
    handed out without a pause. ``resync`` ends the flood: what the viewer skipped is in the snapshot.
    """

    read_only = True
    description = "flood (test data)"

    def __init__(self) -> None:
        self.truth = {str(n): S.FAILED if n % 7 == 0 else S.COMPLETED for n in range(1, JOBS + 1)}
        self.resync_asked = asyncio.Event()
        self.gate = asyncio.Event()
        """Set by the test to let the snapshot after a resync through."""
        self.handed_out = 0

    def _record(self, job_id: str, status: JobStatus) -> JobRecord:
        return JobRecord(job_id=job_id, backend="grid", status=status, group="flood", status_since=NOW)

    def _flood(self) -> list[Event]:
        events: list[Event] = []
        for job_id, end in self.truth.items():
            for old, new in ((S.SUBMITTED, S.RUNNING), (S.RUNNING, S.COMPLETING), (S.COMPLETING, end)):
                events.append(JobChanged(at=NOW, job_id=job_id, backend="grid", old=old, new=new, source="poll"))
        return events

    async def events(self) -> AsyncIterator[Event | ConnectionChanged]:
        start = tuple(self._record(job_id, S.SUBMITTED) for job_id in self.truth)
        yield Snapshot(at=NOW, session="flood", jobs=start)
        for event in self._flood():
            if self.resync_asked.is_set():
                break
            self.handed_out += 1
            yield event
        await self.gate.wait()
        yield Snapshot(at=NOW + 1, session="flood", jobs=tuple(self._record(j, s) for j, s in self.truth.items()))
        await asyncio.Event().wait()

    def resync(self) -> bool:
        self.resync_asked.set()
        return True

    async def send(self, command: Command) -> CommandAcked:
        return CommandAcked(at=NOW, command_id=command.command_id, ok=False, message="read-only")


def status_bar(app: GangaMonitorApp) -> str:
    return str(app.query_one("#status-bar", Static).render())


async def test_a_viewer_that_falls_behind_catches_up_from_a_snapshot_with_every_job_right() -> None:
    source = FloodSource()
    app = GangaMonitorApp(source, clock=frozen_clock, tick=3600, behind_limit=1000)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.resyncs == 1)
        await wait_for(pilot, lambda: "catching up from a snapshot" in status_bar(app))
        assert source.handed_out < 3 * JOBS, "the flood was cut short by the resync"
        assert app.skipped > 0
        source.gate.set()
        await wait_for(pilot, lambda: app.caught_up and app.store.final == JOBS)
        assert {job_id: row.status for job_id, row in app.store.rows.items()} == source.truth
        assert app.store.counts[S.FAILED] == sum(1 for status in source.truth.values() if status == S.FAILED)
        assert "catching up" not in status_bar(app)
        assert app.resyncs == 1


async def test_a_fold_that_never_ran_is_started_by_the_tick() -> None:
    job = JobRecord(job_id="1", backend="grid", status=S.RUNNING)
    source = FixedSource([Snapshot(at=NOW, session="s", jobs=(job,))])
    app = GangaMonitorApp(source, clock=frozen_clock, tick=0.2)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.store.total == 1)
        # A fold is due but lost: events wait, and nothing will fold them.
        app._fold_scheduled = True
        source.push(JobChanged(at=NOW, job_id="1", backend="grid", old=S.RUNNING, new=S.COMPLETED, source="poll"))
        await source.drained.wait()
        assert app.pending
        await wait_for(pilot, lambda: app.store.rows["1"].status == S.COMPLETED)
    assert app.fold_restarts == 1
