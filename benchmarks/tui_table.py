"""The job table with 100,000 jobs versus none: frame time, keypress latency, and event throughput.

Prints numbers; asserts nothing. Run: ``python benchmarks/tui_table.py [--jobs 100000]``.

- frame: a row changes, the table refreshes from the store and renders every visible line
  (what a repaint costs the table), median and p95 over many frames;
- key to screen: a cursor key sent to the app until the frame that shows its effect has been
  composed and encoded for the terminal, p95 (the pilot's own settling waits, tens of ms of
  sleeping for CPU idleness, are not part of it);
- events: job state changes folded in by the app's bus worker per second, with repaints.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import RenderableType
from textual import events
from textual._compositor import CompositorUpdate
from textual.screen import Screen

from ganga_tui.app import GangaMonitorApp
from ganga_tui.widgets.job_table import JobTable
from monitor_core import BackendRecord, JobChanged, JobRecord, JobStatus, Snapshot
from tests.tui.fixed_data import NOW, FixedSource, frozen_clock

SIZE = (200, 50)
S = JobStatus


def snapshot(jobs: int) -> Snapshot:
    records = tuple(
        JobRecord(
            job_id=str(i),
            backend="dirac-sim",
            status=S.RUNNING,
            name=f"batch{i // 1000:03d}.{i % 1000}",
            group=f"batch{i // 1000:03d}",
            status_since=NOW - 60,
            last_confirmed=NOW - 5,
        )
        for i in range(1, jobs + 1)
    )
    return Snapshot(
        at=NOW,
        session="bench",
        jobs=records,
        backends=(BackendRecord(name="dirac-sim", poll_interval=60),),
    )


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18] if len(values) >= 20 else max(values)


async def key_to_screen(app: GangaMonitorApp, key: str) -> float:
    """Seconds from a key reaching the app to the next frame written out for the terminal."""
    shown: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    original = app._display

    def display(screen: Screen[object], renderable: RenderableType | None) -> None:
        original(screen, renderable)
        if renderable is not None and not shown.done():
            # Headless apps skip the terminal encoding; do it here so its cost is counted.
            if isinstance(renderable, CompositorUpdate):
                renderable.render_segments(app.console)
            shown.set_result(time.perf_counter())

    app._display = display  # type: ignore[method-assign]
    try:
        event = events.Key(key, None)
        event.set_sender(app)
        started = time.perf_counter()
        assert app._driver is not None
        app._driver.send_message(event)
        return await asyncio.wait_for(shown, 5) - started
    finally:
        app._display = original  # type: ignore[method-assign]


async def measure(jobs: int, frames: int, keys: int, changes: int) -> dict[str, float]:
    source = FixedSource([snapshot(jobs)])
    app = GangaMonitorApp(source, clock=frozen_clock, tick=3600)
    results: dict[str, float] = {}
    async with app.run_test(size=SIZE) as pilot:
        await source.drained.wait()
        await pilot.pause()
        table = app.main_screen.query_one(JobTable)
        table.refresh_from_store(force=True)
        height = table.scrollable_content_region.height
        times = []
        for frame in range(frames):
            job_id = str(1 + frame % max(1, min(jobs, height - 1)))
            started = time.perf_counter()
            if jobs:
                app.store.apply(
                    JobChanged(at=NOW, job_id=job_id, backend="dirac-sim", old=S.RUNNING, new=S.RUNNING, source="poll")
                )
            table.refresh_from_store()
            for y in range(height):
                table.render_line(y)
            times.append(time.perf_counter() - started)
        results["frame_median_ms"] = statistics.median(times) * 1000
        results["frame_p95_ms"] = p95(times) * 1000
        latencies = []
        for press in range(keys):
            latencies.append(await key_to_screen(app, "down" if press % 40 < 20 else "up"))
            await pilot.pause()
        results["key_p95_ms"] = p95(latencies) * 1000
        if jobs:
            events = [
                JobChanged(
                    at=NOW,
                    job_id=str(1 + i % jobs),
                    backend="dirac-sim",
                    old=S.RUNNING,
                    new=S.COMPLETING if i % 2 == 0 else S.RUNNING,
                    source="poll",
                )
                for i in range(changes)
            ]
            started = time.perf_counter()
            source.push(*events)
            await source.drained.wait()
            await pilot.pause()
            results["events_per_s"] = changes / (time.perf_counter() - started)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--changes", type=int, default=50_000)
    args = parser.parse_args()
    print(f"terminal {SIZE[0]}x{SIZE[1]}, {args.frames} frames, {args.keys} keys, {args.changes} job changes")
    print(f"{'jobs':>8} {'frame median ms':>16} {'frame p95 ms':>13} {'key p95 ms':>11} {'changes/s':>10}")
    for jobs in (0, args.jobs):
        r = asyncio.run(measure(jobs, args.frames, args.keys, args.changes))
        rate = f"{r['events_per_s']:10.0f}" if "events_per_s" in r else f"{'-':>10}"
        print(f"{jobs:>8} {r['frame_median_ms']:16.3f} {r['frame_p95_ms']:13.3f} {r['key_p95_ms']:11.1f} {rate}")


if __name__ == "__main__":
    main()
