"""Headless mode: the bus as progress lines, a Rich progress display, or JSON lines.

The reporter is a bus subscriber like any viewer, so it never slows the scheduler: it
drains what its subscription holds and writes it on a thread, while the subscription
buffers whatever arrives meanwhile.

The wait contract, for scripts and CI (see :mod:`ganga_tui.wait_contract` for the grammar):
``--until all:final`` (``--until-done`` is its alias), ``group:NAME:final``, ``backend:NAME:final``;
``--fail-on any:failed``; ``--timeout 2h``. Exit status: 0 the ``--until`` condition held (for
``all:final``: and no job was lost or mis-stated), 1 a job was lost or mis-stated, 3 the timeout
passed first, 4 a ``--fail-on`` condition held, 130 interrupted.

JSON lines (``--json``): every line is ``{"v": 1, "type": <name>, "data": {...}}``. Bus events come
first (a ``Snapshot``, then deltas; see ``monitor_core.transports``); the last line has type
``Summary`` and its data holds the session summary plus ``exit_code`` and ``reason``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, Final

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from monitor_core import Event, MonitorSession, SessionConfig, SessionSummary, Subscription
from monitor_core.transports import SCHEMA_VERSION, encode_event

from .tally import Tally
from .wait_contract import Condition, Watch

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


async def _pump_json(subscription: Subscription, tally: Tally, writer: _Writer, watch: Watch) -> None:
    """Copy every event to the writer as one JSON line, in batches."""
    while True:
        try:
            event: Event | None = await subscription.receive()
        except Exception:  # noqa: BLE001 - the subscription closed
            return
        lines = []
        while event is not None:
            tally.apply(event)
            watch.apply(event)
            lines.append(encode_event(event).decode())
            event = subscription.receive_nowait()
        await writer.write("\n".join(lines) + "\n")


async def _pump_tally(subscription: Subscription, tally: Tally, watch: Watch) -> None:
    async for event in subscription:
        tally.apply(event)
        watch.apply(event)


async def _print_plain(tally: Tally, writer: _Writer, started: float) -> None:
    while True:
        await asyncio.sleep(_PLAIN_EVERY)
        await writer.write(_plain_line(tally, started) + "\n")


def _plain_line(tally: Tally, started: float) -> str:
    return (
        f"[{time.monotonic() - started:7.1f}s] jobs {tally.final}/{tally.total} final | "
        f"{tally.status_line()} | {tally.lag_line()} | rejected {tally.rejections}"
    )


def _rich_view(tally: Tally, progress: Progress, task: TaskID) -> Group:
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
    config: SessionConfig,
    *,
    json_lines: bool,
    until_done: bool = False,
    until: Condition | None = None,
    fail_on: Sequence[Condition] = (),
    time_limit: float | None = None,
    stream: IO[str] | None = None,
) -> int:
    """Run a simulated session without the TUI and report on it.

    Args:
        config: the simulated session.
        json_lines: print JSON lines instead of progress.
        until_done: an alias of ``until=all:final``.
        until: stop once this condition holds (``None``: run until interrupted).
        fail_on: stop with status 4 as soon as one of these holds.
        time_limit: stop with status 3 after this many seconds (``--timeout``).
        stream: where to write (standard output by default).

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
    if until_done and until is None:
        until = Condition.parse("all:final", default="all")
    everything_final = until is not None and str(until) == "all:all:final"
    watch = Watch(None if everything_final else until, list(fail_on))
    timed_out = False
    try:
        async with MonitorSession(config) as session:
            assert session.scheduler is not None
            subscription = session.bus.subscribe(name="headless")
            tasks = [
                asyncio.create_task(
                    _pump_json(subscription, tally, writer, watch)
                    if json_lines
                    else _pump_tally(subscription, tally, watch)
                )
            ]
            if rich_display:
                tasks.append(asyncio.create_task(_show_rich(tally, console)))
            elif not json_lines:
                tasks.append(asyncio.create_task(_print_plain(tally, writer, started)))
            waiters: list[asyncio.Task[Any]] = [
                asyncio.create_task(stop.wait()),
                asyncio.create_task(watch.decided.wait()),
            ]
            if everything_final:
                # The scheduler's own count is the authority on "every job is final".
                waiters.append(asyncio.create_task(session.scheduler.wait_all_final()))
            done, _ = await asyncio.wait(waiters, timeout=time_limit, return_when=asyncio.FIRST_COMPLETED)
            interrupted = stop.is_set()
            timed_out = not done
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
    exit_code, reason = _verdict(summary, until, watch, interrupted=interrupted, timed_out=timed_out)
    if json_lines:
        data = summary.to_dict() | {"exit_code": exit_code, "reason": reason}
        document = {"v": SCHEMA_VERSION, "type": "Summary", "data": data}
        await writer.write(json.dumps(document, separators=(",", ":")) + "\n")
    else:
        if not rich_display:
            await writer.write(_plain_line(tally, started) + "\n")
        console.print(render_summary(summary))
        console.print(f"exit {exit_code}: {reason}")
    writer.close()
    return exit_code


def _verdict(
    summary: SessionSummary, until: Condition | None, watch: Watch, *, interrupted: bool, timed_out: bool
) -> tuple[int, str]:
    """The exit status and why (the codes are listed in ``_cli.EXIT_CODES``)."""
    if interrupted:
        return 130, "interrupted"
    if watch.failed is not None:
        return 4, f"--fail-on {watch.failed} held"
    if timed_out:
        return 3, f"--timeout passed before --until {until} held"
    if until is None:
        return 0, "stopped"
    if str(until) == "all:all:final":
        return (0, "every job is final and truly stated") if summary.ok else (1, "a job was lost or mis-stated")
    return 0, f"--until {until} held"
