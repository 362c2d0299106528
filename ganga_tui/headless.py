"""Headless mode: the bus as progress lines, a Rich progress display, or JSON lines.

The reporter is a bus subscriber like any viewer, so it never slows the scheduler: it
drains what its subscription holds and writes it on a thread, while the subscription
buffers whatever arrives meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Final

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from monitor_core import MonitorSession, SessionConfig, SessionSummary, Subscription
from monitor_core.transports import SCHEMA_VERSION, encode_event

from .tally import Tally

__all__ = ["render_summary", "run_headless"]

_PLAIN_EVERY: Final = 2.0


class _Writer:
    """Writes to a stream on a thread of its own, so a blocked pipe never blocks the loop."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="headless-writer")

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()

    async def write(self, text: str) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._write, text)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


async def _pump_json(subscription: Subscription, tally: Tally, writer: _Writer) -> None:
    """Copy every event to the writer as one JSON line, in batches."""
    while True:
        try:
            event = await subscription.receive()
        except Exception:  # noqa: BLE001 - the subscription closed
            return
        lines = []
        while event is not None:
            tally.apply(event)
            lines.append(encode_event(event).decode())
            event = subscription.receive_nowait()
        await writer.write("\n".join(lines) + "\n")


async def _pump_tally(subscription: Subscription, tally: Tally) -> None:
    async for event in subscription:
        tally.apply(event)


async def _print_plain(tally: Tally, writer: _Writer, started: float) -> None:
    while True:
        await asyncio.sleep(_PLAIN_EVERY)
        await writer.write(_plain_line(tally, started) + "\n")


def _plain_line(tally: Tally, started: float) -> str:
    return (
        f"[{time.monotonic() - started:7.1f}s] jobs {tally.final}/{tally.total} final | "
        f"{tally.status_line()} | {tally.lag_line()} | rejected {tally.rejections}"
    )


def _rich_view(tally: Tally, progress: Progress, task: int) -> Group:
    progress.update(task, completed=tally.final, total=max(tally.total, 1))
    table = Table(box=None, pad_edge=False, expand=False)
    for column in ("backend", "active", "in flight", "queued", "lag", "calls/min", "errors", "breaker"):
        table.add_column(column, justify="left" if column in ("backend", "breaker") else "right")
    for record in tally.backends.values():
        lag_style = "bold red" if record.lag > record.poll_interval else ""
        table.add_row(
            record.name,
            str(record.active_jobs),
            f"{record.in_flight}/{record.concurrency_limit}",
            str(record.queued_ops),
            Text(f"{record.lag:.1f}s", style=lag_style),
            f"{record.calls_per_minute:.0f}",
            f"{record.error_rate:.0%}",
            record.breaker,
        )
    return Group(progress, Text(tally.status_line() or "waiting for jobs"), table)


async def _show_rich(tally: Tally, console: Console) -> None:
    progress = Progress(
        TextColumn("jobs final"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    task = progress.add_task("jobs", total=1)
    with Live(_rich_view(tally, progress, task), console=console, refresh_per_second=4, transient=False) as live:
        while True:
            await asyncio.sleep(0.25)
            live.update(_rich_view(tally, progress, task))


def render_summary(summary: SessionSummary) -> Table:
    """The end-of-run summary as a Rich table."""
    table = Table(title="monitoring summary", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("jobs", f"{summary.jobs} of {summary.planned} planned")
    table.add_row("by status", "  ".join(f"{status} {count}" for status, count in summary.by_status.items()))
    for backend in summary.backends:
        table.add_row(
            f"lag {backend.name}",
            f"p50 {backend.lag_p50:.2f}s  p99 {backend.lag_p99:.2f}s  max {backend.lag_max:.2f}s  "
            f"({backend.jobs} jobs, {backend.calls} calls, {backend.retries} retries, {backend.rejections} rejections)",
        )
    table.add_row("operations", f"{summary.operations} run, {summary.retries} retried")
    table.add_row("rejections", str(summary.rejections))
    table.add_row("outputs", f"{summary.outputs_collected} collected")
    table.add_row("lost", str(len(summary.lost)) + (f" ({', '.join(summary.lost[:10])})" if summary.lost else ""))
    table.add_row(
        "mis-stated",
        str(len(summary.misstated)) + (f" ({', '.join(summary.misstated[:10])})" if summary.misstated else ""),
    )
    table.add_row("elapsed", f"{summary.elapsed:.1f}s")
    table.add_row("verdict", Text("OK" if summary.ok else "NOT OK", style="bold green" if summary.ok else "bold red"))
    return table


def _install_stop_handlers(stop: asyncio.Event) -> Callable[[], None]:
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)

    def remove() -> None:
        for signum in installed:
            loop.remove_signal_handler(signum)

    return remove


async def run_headless(
    config: SessionConfig, *, json_lines: bool, until_done: bool, stream: IO[str] | None = None
) -> int:
    """Run a simulated session without the TUI and report on it.

    Returns:
        The process exit status (see ``ganga-monitor-tui --help``).
    """
    out = stream or sys.stdout
    console = Console(file=out)
    rich_display = not json_lines and out.isatty()
    writer = _Writer(out)
    stop = asyncio.Event()
    remove_handlers = _install_stop_handlers(stop)
    started = time.monotonic()
    tally = Tally()
    interrupted = False
    try:
        async with MonitorSession(config) as session:
            assert session.scheduler is not None
            subscription = session.bus.subscribe(name="headless")
            tasks = [
                asyncio.create_task(
                    _pump_json(subscription, tally, writer) if json_lines else _pump_tally(subscription, tally)
                )
            ]
            if rich_display:
                tasks.append(asyncio.create_task(_show_rich(tally, console)))
            elif not json_lines:
                tasks.append(asyncio.create_task(_print_plain(tally, writer, started)))
            waiters = [asyncio.create_task(stop.wait())]
            if until_done:
                waiters.append(asyncio.create_task(session.scheduler.wait_all_final()))
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            interrupted = stop.is_set()
            for waiter in waiters:
                waiter.cancel()
            session.scheduler.sample()
            summary = session.summary()
            subscription.close()
            for task in tasks:
                if task is not tasks[0]:
                    task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        remove_handlers()
    if json_lines:
        document = {"v": SCHEMA_VERSION, "type": "Summary", "data": summary.to_dict()}
        await writer.write(json.dumps(document, separators=(",", ":")) + "\n")
    else:
        if not rich_display:
            await writer.write(_plain_line(tally, started) + "\n")
        console.print(render_summary(summary))
    writer.close()
    if interrupted:
        return 130
    if until_done:
        return 0 if summary.ok else 1
    return 0
