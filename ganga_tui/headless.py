"""Headless mode: one runner for every event source, as progress lines, a Rich display, or JSON lines.

``--demo`` runs the simulated session in this process and reads it through an
:class:`~monitor_core.InProcessSource`; ``--attach``, ``--mqtt`` and ``--replay`` read their
sources the same way. Everything shown and decided comes from the one fold
(:class:`~monitor_core.StateFold`), so the wait contract and the summary mean the same for
every source.

The wait contract, for scripts and CI (see :mod:`ganga_tui.wait_contract` for the grammar):
``--until all:final`` (``--until-done`` is its alias), ``group:NAME:final``, ``backend:NAME:final``;
``--fail-on any:failed``; ``--timeout 2h``. Exit status: 0 the ``--until`` condition held (for
``all:final``: and no job was lost or mis-stated), 1 a job was lost or mis-stated, or the session
ended before the condition held, 3 the timeout passed first, 4 a ``--fail-on`` condition held,
5 the source failed (a damaged recording), 130 interrupted.

A stream that ends early never makes the runner go silent: sources take their subscription up
again from a fresh snapshot (after an overflow, a reconnect), and the runner says so.

JSON lines (``--json``): every line is ``{"v": 2, "type": <name>, "data": {...}}``. Bus events come
first (a ``Snapshot``, then deltas; see ``monitor_core.transports``), with ``ConnectionChanged``
lines where the source lost or regained its session; the last line has type ``Summary`` and its
data holds the summary plus ``exit_code`` and ``reason``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
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

from monitor_core import (
    ConnectionChanged,
    EventSource,
    InProcessSource,
    JobStatus,
    MonitorSession,
    SessionConfig,
    SessionSummary,
    Snapshot,
    StateFold,
)
from monitor_core.transports import SCHEMA_VERSION, encode_event

from .summary import summarize
from .wait_contract import Condition, Watch

__all__ = ["plain_line", "render_summary", "run_demo_headless", "run_headless"]

log = logging.getLogger(__name__)

_PLAIN_EVERY: Final = 2.0
_FLUSH_EVERY: Final = 0.05
"""Seconds between writes of buffered JSON lines (one write per burst, not per event)."""
_ALL_FINAL: Final = "all:all:final"


class _Writer:
    """Writes to a stream on a thread of its own, so a blocked pipe never blocks the loop."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="headless-writer")
        self._pending: list[str] = []

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()

    def buffer(self, line: str) -> None:
        """Queue a line for the next :meth:`flush`."""
        self._pending.append(line)

    async def flush(self) -> None:
        if self._pending:
            text = "\n".join(self._pending) + "\n"
            self._pending = []
            await self.write(text)

    async def write(self, text: str) -> None:
        # Shielded: cancelling a write the thread has not picked up yet would drop its lines,
        # and the reporter is cancelled at the end of every run. `close` waits for it instead.
        await asyncio.shield(asyncio.get_running_loop().run_in_executor(self._executor, self._write, text))

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def _status_line(fold: StateFold) -> str:
    return "  ".join(f"{status.value} {fold.counts[status]}" for status in JobStatus if fold.counts[status])


def _lag_line(fold: StateFold) -> str:
    parts = []
    for record in fold.backends.values():
        flag = "" if record.breaker == "closed" else f" breaker {record.breaker}"
        paused = " paused" if record.paused else ""
        results = f" results {record.results_lag:.1f}s" if record.results_lag or record.fetches_queued else ""
        queued = f" ({record.fetches_queued} fetches queued)" if record.fetches_queued else ""
        parts.append(f"{record.name} lag {record.lag:.1f}s{results}{queued}{flag}{paused}")
    faults = [f"local fault {what}: {fault.error}" for (_, what), fault in fold.faults.items()]
    return "  ".join(parts + faults)


def plain_line(fold: StateFold, started: float) -> str:
    """One progress line: final jobs, jobs per status, each backend's status and results lag."""
    return (
        f"[{time.monotonic() - started:7.1f}s] jobs {fold.final}/{fold.total} final | "
        f"{_status_line(fold)} | {_lag_line(fold)} | rejected {fold.counters.get('rejections', 0)}"
    )


def _rich_view(fold: StateFold, progress: Progress, task: TaskID) -> Group:
    progress.update(task, completed=fold.final, total=max(fold.total, 1))
    table = Table(box=None, pad_edge=False, expand=False)
    columns = ("backend", "active", "in flight", "queued", "lag", "results lag", "fetches", "collect in")
    for column in (*columns, "calls/min", "errors", "breaker"):
        table.add_column(column, justify="left" if column in ("backend", "breaker") else "right")
    for record in fold.backends.values():
        lag_style = "bold red" if record.poll_interval and record.lag > record.poll_interval else ""
        bound = "" if record.collect_bound is None else f"{record.collect_bound:.0f}s"
        table.add_row(
            record.name,
            str(record.active_jobs),
            f"{record.in_flight}/{record.concurrency_limit}",
            str(record.queued_ops),
            Text(f"{record.lag:.1f}s", style=lag_style),
            f"{record.results_lag:.1f}s",
            f"{record.fetches_in_flight}/{record.fetch_limit} +{record.fetches_queued}",
            bound,
            f"{record.calls_per_minute:.0f}",
            f"{record.error_rate:.0%}",
            record.breaker,
        )
    return Group(progress, Text(_status_line(fold) or "waiting for jobs"), table)


async def _show_rich(fold: StateFold, console: Console) -> None:
    progress = Progress(
        TextColumn("jobs final"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    task = progress.add_task("jobs", total=1)
    with Live(_rich_view(fold, progress, task), console=console, refresh_per_second=4, transient=False) as live:
        while True:
            await asyncio.sleep(0.25)
            live.update(_rich_view(fold, progress, task))


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
        table.add_row(
            f"results {backend.name}",
            f"p50 {backend.results_p50:.2f}s  p99 {backend.results_p99:.2f}s  max {backend.results_max:.2f}s  "
            f"(end to collected, {backend.results_jobs} jobs)",
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


def _connection_json(item: ConnectionChanged) -> str:
    data = {"at": item.at, "connected": item.connected, "reason": item.reason}
    return json.dumps({"v": SCHEMA_VERSION, "type": "ConnectionChanged", "data": data}, separators=(",", ":"))


async def run_headless(
    source: EventSource,
    *,
    json_lines: bool,
    until_done: bool = False,
    until: Condition | None = None,
    fail_on: Sequence[Condition] = (),
    time_limit: float | None = None,
    stream: IO[str] | None = None,
    audit: Callable[[], SessionSummary] | None = None,
    kinds: Sequence[str] | None = None,
) -> int:
    """Report any source without the TUI, and wait as the options say.

    Args:
        source: the events (a demo's bus in this process, a socket, a broker, a recording).
        json_lines: print JSON lines instead of progress.
        until_done: an alias of ``until=all:final``.
        until: stop once this condition holds (``None``: until the stream ends or an interrupt).
        fail_on: stop with status 4 as soon as one of these holds.
        time_limit: stop with status 3 after this many seconds (``--timeout``).
        stream: where to write (standard output by default).
        audit: the session's own audit of intended outcomes, where the source knows it.
        kinds: with ``json_lines``, print only events of these types (``--events``). The fold
            then lacks the rest, so the closing ``Summary`` holds only the verdict and the kinds.

    Returns:
        The process exit status (see ``ganga-monitor-tui --help``).
    """
    out = stream or sys.stdout
    # Written to a file or a pipe, the summary keeps one line per figure, for scripts that grep it.
    console = Console(file=out, width=None if out.isatty() else 200)
    rich_display = not json_lines and out.isatty()
    writer = _Writer(out)
    stop = asyncio.Event()
    remove_handlers = _install_stop_handlers(stop)
    started = time.monotonic()
    if until_done and until is None:
        until = Condition.parse("all:final", default="all")
    fold = StateFold()
    watch = Watch(until, list(fail_on), fold)
    selected = frozenset(kinds) if kinds is not None else None
    stream_ended = asyncio.Event()

    def say(line: str) -> None:
        # A fact about the stream itself: a log line, and a progress line where progress is printed.
        log.warning("%s", line)
        if not json_lines and not rich_display:
            writer.buffer(line)

    async def follow() -> None:
        try:
            async for item in source.events():
                if isinstance(item, ConnectionChanged):
                    if json_lines:
                        writer.buffer(_connection_json(item))
                    else:
                        say(f"{'connected' if item.connected else 'disconnected'}: {item.reason}")
                    continue
                if isinstance(item, Snapshot) and fold.snapshots > 0:
                    say(f"resynced from a fresh snapshot ({len(item.jobs)} jobs)")
                watch.apply(item)
                if json_lines and (selected is None or type(item).__name__ in selected):
                    writer.buffer(encode_event(item).decode())
                if watch.decided.is_set():
                    return
        finally:
            stream_ended.set()

    async def report() -> None:
        last_plain = time.monotonic()
        while True:
            await asyncio.sleep(_FLUSH_EVERY)
            if not json_lines and not rich_display and time.monotonic() - last_plain >= _PLAIN_EVERY:
                last_plain = time.monotonic()
                writer.buffer(plain_line(fold, started))
            await writer.flush()

    follower = asyncio.create_task(follow(), name="headless.follow")
    helpers: list[asyncio.Task[Any]] = [asyncio.create_task(report(), name="headless.report")]
    if rich_display:
        helpers.append(asyncio.create_task(_show_rich(fold, console), name="headless.rich"))
    waiters: list[asyncio.Task[Any]] = [
        asyncio.create_task(stop.wait()),
        asyncio.create_task(watch.decided.wait()),
        asyncio.create_task(stream_ended.wait()),
    ]
    try:
        done, _ = await asyncio.wait(waiters, timeout=time_limit, return_when=asyncio.FIRST_COMPLETED)
    finally:
        remove_handlers()
        for task in (*waiters, follower, *helpers):
            task.cancel()
        results = await asyncio.gather(follower, *helpers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await source.aclose()
    error = results[0]
    if isinstance(error, Exception):
        log.error("watching failed: %r", error)
    watch.check()
    summary = summarize(fold, time.monotonic() - started, audit() if audit is not None else None)
    exit_code, reason = _verdict(
        summary,
        until,
        watch,
        interrupted=stop.is_set(),
        timed_out=not done,
        failure=source.failure or (f"watching failed: {error!r}" if isinstance(error, Exception) else None),
        ended=fold.ended,
    )
    if json_lines:
        verdict = {"exit_code": exit_code, "reason": reason}
        data = summary.to_dict() | verdict if selected is None else {"events": sorted(selected)} | verdict
        writer.buffer(json.dumps({"v": SCHEMA_VERSION, "type": "Summary", "data": data}, separators=(",", ":")))
        await writer.flush()
    else:
        if not rich_display:
            writer.buffer(plain_line(fold, started))
        await writer.flush()
        console.print(render_summary(summary))
        console.print(f"exit {exit_code}: {reason}")
    writer.close()
    return exit_code


def _verdict(
    summary: SessionSummary,
    until: Condition | None,
    watch: Watch,
    *,
    interrupted: bool,
    timed_out: bool,
    failure: str | None,
    ended: str | None,
) -> tuple[int, str]:
    """The exit status and why (the codes are listed in ``_cli.EXIT_CODES``)."""
    if interrupted:
        return 130, "interrupted"
    if watch.failed is not None:
        return 4, f"--fail-on {watch.failed} held"
    if watch.decided.is_set() and until is not None:
        if str(until) == _ALL_FINAL:
            return (0, "every job is final and truly stated") if summary.ok else (1, "a job was lost or mis-stated")
        return 0, f"--until {until} held"
    if failure is not None:
        return 5, f"the source failed: {failure}"
    if timed_out:
        return 3, f"--timeout passed before --until {until} held" if until is not None else "--timeout passed"
    if until is None:
        return 0, f"the session ended: {ended}" if ended else "the stream ended"
    return 1, f"the stream ended before --until {until} held" + (f" (session ended: {ended})" if ended else "")


async def run_demo_headless(config: SessionConfig, **options: Any) -> int:
    """Run a simulated session in this process and report it like any other source.

    Args:
        config: the simulated session.
        options: as for :func:`run_headless`.
    """
    async with MonitorSession(config) as session:
        scheduler = session.scheduler
        assert scheduler is not None

        def audit() -> SessionSummary:
            scheduler.sample()
            return session.summary()

        return await run_headless(InProcessSource(session.bus, scheduler), audit=audit, **options)
