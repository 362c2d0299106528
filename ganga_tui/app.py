"""GangaMonitorApp: the live view of a monitoring session, over any :class:`~monitor_core.EventSource`.

The session never runs in the app's process: ``--demo`` starts it as a child process
(:mod:`ganga_tui.demo`) and the app attaches to its socket, as beside a Ganga session.

One exclusive worker reads the source and only queues what it reads, so the session is
never held up by the screen. At most once a frame the queue is folded into the
:class:`JobStore` in one batch (each touched job's row refreshed once) and the widgets
repaint what changed. When the queue outgrows what the app can fold, the status bar says
"behind by N events" and the app asks the source for a fresh snapshot instead of folding
what it skips. Commands (refresh a job, collect its outputs, pause a backend, change an
interval) go back through the same source.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Callable
from typing import ClassVar, Final

from rich.text import Text
from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.driver import Driver
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Input, Static
from textual.worker import Worker, WorkerState

from monitor_core import (
    CollectionPace,
    CollectOutput,
    Command,
    CommandAcked,
    ConnectionChanged,
    Event,
    EventSource,
    JobStatus,
    PauseBackend,
    RefreshJob,
    ResumeBackend,
    SessionConfig,
    SetInterval,
    Snapshot,
    release_free_memory,
)
from monitor_core.transports.socket_source import SocketSource

from ._driver import noting_input
from .demo import DemoSession
from .job_store import SORT_KEYS, JobFilter, JobStore
from .messages import CommandAnswered, SourceEnded
from .notify import Notifier
from .palette import MonitorCommands
from .screens.dashboard import DashboardScreen
from .screens.help import HelpScreen
from .screens.job_detail import JobDetailScreen
from .screens.prompts import IntervalPrompt
from .screens.warnings import WarningsScreen
from .sources import bind_replay_keys, control_replay
from .widgets._format import show
from .widgets.backends_panel import BackendsPanel
from .widgets.filter_box import FilterBox
from .widgets.job_table import JobTable
from .widgets.key_footer import KeyFooter
from .widgets.op_queue import OpQueue
from .widgets.progress_panel import ProgressPanel

__all__ = ["GangaMonitorApp", "run_app"]

_YIELD_EVERY: Final = 256
"""Events read before the bus worker lets the UI run."""
_FRAME: Final = 1 / 30
"""At most one fold (and one repaint) per this many seconds."""
_GC_EVERY: Final = 20.0
"""Seconds between two full garbage collections, once the app runs them itself."""
_SWEEP_EVERY: Final = 300.0
"""Seconds between two sweeps of the frozen objects too (see :meth:`CollectionPace.sweep`)."""
_SWEEP_QUIET: Final = 1.0
"""Seconds without a key before a sweep's quarter of a second is spent (unless one is overdue)."""
_FOLD_STALL: Final = 2.0
"""Seconds with events waiting and no fold before the tick starts one itself."""
_FOLD_BUDGET: Final = 0.02
"""Seconds of folding per frame; the rest waits for the next frame."""
_FOLD_SLICE: Final = 256
"""Events folded between two looks at the clock (small enough that a key waits at most a slice past the budget)."""
_BEHIND_MARK: Final = 5_000
"""Events waiting before the status bar says the view is behind."""
BEHIND_LIMIT: Final = 200_000
"""Events waiting before the app gives up on them and asks for a fresh snapshot."""
_PANEL_GAP: Final = 0.25
"""Seconds between two repaints of the panels around the table while events stream in."""
_INPUT_QUIET: Final = 0.06
"""Seconds after a key during which folding, the panels and the tick's upkeep wait, so the key's
result is the next thing painted."""
_INPUT_DEFER_MAX: Final = 0.25
"""Seconds that work may be put off for keys in a row; keys typed without pause never starve the view."""
_WARNING_BUDGET: Final = 20_000
"""Jobs whose warnings are rechecked per tick, so 100k jobs never stall a frame."""
_FREEZE_FROM: Final = 5_000
"""Jobs in view before the app first moves what it holds out of the garbage collector's sight."""
_WARNING_SLICE: Final = 2_000
"""Jobs rechecked in one go; the tick's budget is spent in slices with the message queue (keys) between."""
_MAIN_ONLY: Final = frozenset(
    {
        "filter",
        "clear_filter",
        "refresh_job",
        "collect_output",
        "cycle_status_filter",
        "cycle_backend_filter",
        "cycle_sort",
        "reverse_sort",
        "toggle_side",
        "warnings",
    }
)
"""Actions on the dashboard's table and panels."""
_STATUS_CYCLE: Final = (
    None,
    JobStatus.RUNNING,
    JobStatus.SUBMITTED,
    JobStatus.COMPLETING,
    JobStatus.COMPLETED,
    JobStatus.FAILED,
)


def _replace_word(query: str, prefixes: tuple[str, ...], word: str | None) -> str:
    """``query`` with its ``prefix:`` words swapped for ``word`` (or dropped)."""
    kept = [w for w in query.split() if w.partition(":")[0].lower() not in prefixes or ":" not in w]
    if word is not None:
        kept.insert(0, word)
    return " ".join(kept)


class _Deferral:
    """Puts work off while keys come in, but never for longer than ``_INPUT_DEFER_MAX`` in a row."""

    def __init__(self) -> None:
        self._since: float | None = None

    def wait(self, input_at: float, now: float) -> float:
        """Seconds to put the work off (0: do it now)."""
        quiet = input_at + _INPUT_QUIET - now
        if quiet <= 0:
            self._since = None
            return 0.0
        if self._since is None:
            self._since = now
        elif now - self._since >= _INPUT_DEFER_MAX:
            self._since = None
            return 0.0
        return quiet


class GangaMonitorApp(App[int]):
    """Job states, per-backend lag and the monitoring queue, live.

    Args:
        source: where events come from; ``None`` with ``demo`` set.
        demo: start this simulated session in a child process and attach to it.
        keep_session: leave the demo's session running when the app quits.
        clock: wall-clock time now (frozen in tests).
        notifications: ring the bell and raise desktop notifications from the start.
        tick: seconds between time-driven repaints (ages, fading, warnings).
        behind_limit: events waiting to be folded before the app resyncs from a snapshot.
    """

    CSS_PATH = "app.tcss"
    TITLE = "ganga-monitor"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]  # noqa: RUF012 - Textual declares it so
    COMMANDS = App.COMMANDS | {MonitorCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("colon", "command_palette", "Commands"),
        # Priority: the app handles "/" as it reads it, so the filter box has focus before
        # the next key is handed on (typed fast, "b" would otherwise reach the table).
        Binding("slash", "filter", "Filter", priority=True),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("r", "refresh_job", "Refresh"),
        Binding("c", "collect_output", "Collect"),
        Binding("p", "toggle_backend_pause", "Pause backend"),
        Binding("i", "set_interval", "Interval", show=False),
        Binding("space", "toggle_view_pause", "Freeze"),
        Binding("w", "warnings", "Warnings"),
        Binding("f", "cycle_status_filter", "Filter state", show=False),
        Binding("b", "cycle_backend_filter", "Filter backend", show=False),
        Binding("s", "cycle_sort", "Sort", show=False),
        Binding("S", "reverse_sort", "Reverse sort", show=False),
        Binding("o", "toggle_side", "Side panel", show=False),
        Binding("n", "toggle_notifications", "Notifications", show=False),
    ]

    view_paused: reactive[bool] = reactive(False)
    """The screen is frozen; events still reach the store."""
    notifications: reactive[bool] = reactive(False)
    """Bell and desktop notification on failures and finished groups."""

    def __init__(
        self,
        source: EventSource | None = None,
        *,
        demo: SessionConfig | None = None,
        keep_session: bool = False,
        clock: Callable[[], float] = time.time,
        notifications: bool = False,
        tick: float = 1.0,
        behind_limit: int = BEHIND_LIMIT,
    ) -> None:
        if (source is None) == (demo is None):
            raise ValueError("give exactly one of source and demo")
        super().__init__()
        self.source = source
        """The stream being watched (set once the demo session is up)."""
        self.demo = demo
        self.demo_session: DemoSession | None = None
        """The demo's session process, once started."""
        self.demo_step: str | None = None
        """The step of its start the demo's session is at, until it serves."""
        self.keep_session = keep_session
        self.behind_limit = behind_limit
        self.pending: list[Event | ConnectionChanged] = []
        """Events read but not folded yet."""
        self.resyncs = 0
        """Times the app skipped what it could not fold and took a fresh snapshot."""
        self.skipped = 0
        """Events dropped while waiting for a fresh snapshot."""
        self.folds = 0
        """Batches folded (at most one a frame)."""
        self.gc_pace: CollectionPace | None = None
        """The full collections' schedule, once the app holds enough jobs to need one."""
        self._collected_at = self._swept_at = time.monotonic()
        self._trim: asyncio.Future[bool] | None = None
        """Freed memory being handed back to the system after the last full collection."""
        self._snapshot_trim: asyncio.Future[bool] | None = None
        """Freed memory being handed back to the system after the last snapshot folded in."""
        self.fold_restarts = 0
        """Folds the tick had to start because the one scheduled never ran."""
        self._awaiting_snapshot = False
        self._fold_scheduled = False
        self._last_fold = 0.0
        self.clock = clock
        self.tick = tick
        self.store = JobStore()
        """Everything shown, folded from the source's events."""
        self.notifier = Notifier(self._write_terminal)
        self.auto_tail = True
        """Fetch a final job's output tail when its detail opens."""
        self.last_ack: tuple[str, CommandAcked] | None = None
        """The last command's description and acknowledgement."""
        self.ended: str | None = None
        """Why the source ended, once it has."""
        self._session_task: asyncio.Task[None] | None = None
        self._warning_scan_at = 0.0
        self._panels_at = float("-inf")
        self._panels_due = False
        self._filter_query = ""
        """The filter's text as last applied."""
        self.input_at = float("-inf")
        """When the last key arrived (monotonic clock)."""
        self._fold_deferral = _Deferral()
        self._panels_deferral = _Deferral()
        self._tick_deferral = _Deferral()
        self._read_deferral = _Deferral()
        self._frozen_jobs = 0
        self._detail_screen: JobDetailScreen | None = None
        self._tick_due = False
        self.set_reactive(GangaMonitorApp.notifications, notifications)
        self.notifier.enabled = notifications
        bind_replay_keys(self, source)

    def get_driver_class(self) -> type[Driver]:
        return noting_input(super().get_driver_class(), self)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key):
            # Keys that do not come through the driver (a test's pilot) count too.
            self.input_at = max(self.input_at, time.monotonic())
        await super().on_event(event)

    def _input_wait(self, deferral: _Deferral) -> float:
        """Seconds ``deferral``'s work should wait for a key just typed to be shown (0: go ahead)."""
        return deferral.wait(self.input_at, time.monotonic())

    # -- layout --------------------------------------------------------------------------------

    def get_default_screen(self) -> Screen[object]:
        return DashboardScreen(id="_default")

    def compose(self) -> ComposeResult:
        yield Static(id="status-bar", classes="title-bar")
        yield BackendsPanel(self.store, id="backends")
        with Horizontal(id="body"):
            with Vertical(id="main"):
                # One line, the filter box beside the overall bar, both always there: opening and
                # closing the filter moves nothing (the table keeps its place, size and rendered lines).
                with Horizontal(id="headline"):
                    yield FilterBox(id="filter")
                    yield ProgressPanel(self.store, self.clock, groups=False, id="overall")
                yield Static(id="counts")
                yield JobTable(self.store, self.clock, id="jobs")
            with Vertical(id="side"):
                yield ProgressPanel(self.store, self.clock, id="groups")
                yield OpQueue(self.store, id="ops")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.main_screen.query_one("#groups", ProgressPanel).border_title = "progress by group"
        self.main_screen.query_one(BackendsPanel).border_title = "backends"
        self.main_screen.query_one(JobTable).focus()
        self._show_status()
        if self.source is not None:
            self.consume(self.source)
        else:
            self._session_task = asyncio.create_task(self._start_demo_session(), name="tui[demo].start")
        self.set_interval(self.tick, self._on_tick, name="tui.tick")

    async def _start_demo_session(self) -> None:
        assert self.demo is not None
        self.demo_session = DemoSession(self.demo)
        try:
            path = await self.demo_session.start(on_step=self._demo_stepped)
        except Exception as exc:  # noqa: BLE001 - shown to the user, who can still quit
            self.ended = f"the simulated session failed: {exc}"
            self.notify(self.ended, severity="error", timeout=30)
            self._show_status()
            return
        self.source = SocketSource(path, follow=True)
        self.source.description = f"demo session {self.demo_session.name} (pid {self.demo_session.pid})"
        self.consume(self.source)

    def _demo_stepped(self, what: str) -> None:
        self.demo_step = what
        if self.is_running and self.screen_stack:
            self._show_status()

    async def close_session(self) -> None:
        """Stop the demo's session process, if the app started one and is not asked to keep it."""
        if self._session_task is not None and not self._session_task.done():
            self._session_task.cancel()
        if self.source is not None:
            await self.source.aclose()
        if self.demo_session is not None and not self.keep_session:
            await self.demo_session.stop()

    def farewell(self) -> str | None:
        """What to tell the user about the demo's session once the app is gone."""
        session = self.demo_session
        if session is None or session.pid is None:
            return None
        return session.keep_message() if self.keep_session else session.stopped_message()

    async def on_unmount(self) -> None:
        if self.gc_pace is not None:
            await self.gc_pace.aclose()

    async def action_quit(self) -> None:
        if self.demo_session is not None and not self.keep_session:
            self.main_screen.query_one("#status-bar", Static).update("stopping the session ...")
        await self.close_session()
        self.exit(0)

    @property
    def main_screen(self) -> Screen[object]:
        """The dashboard, under any pushed detail, warnings or help screen."""
        return self.screen_stack[0]

    @property
    def showing(self) -> bool:
        """The dashboard is there to paint: not before the app runs, nor once it is shutting down.

        A timer (the tick, a deferred fold or repaint) can fire while Textual closes the screens,
        after the dashboard's widgets are gone and before the stack is emptied.
        """
        return self.is_running and bool(self.screen_stack)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Table actions make no sense over a detail, warnings or help screen: disable and hide them.
        if action in _MAIN_ONLY and len(self.screen_stack) > 1:
            return False
        # "/" typed into a text box (the filter itself, a prompt) is text.
        return not (action == "filter" and isinstance(self.focused, Input))

    # -- the bus worker ------------------------------------------------------------------------

    @work(exclusive=True, group="bus")
    async def consume(self, source: EventSource) -> None:
        """Read the source's events into the pending queue; folding waits for the next frame."""
        read = 0
        async for item in source.events():
            if self._awaiting_snapshot:
                if isinstance(item, Snapshot):
                    self._awaiting_snapshot = False
                elif not isinstance(item, ConnectionChanged):
                    self.skipped += 1
                    continue
            self.pending.append(item)
            if len(self.pending) > self.behind_limit:
                self._fall_back_to_snapshot(source)
            self._schedule_fold()
            read += 1
            if read % _YIELD_EVERY == 0:
                # A ready stream never suspends; let input and repaints in, and a key just typed
                # be handled and painted before more is read (the session buffers meanwhile).
                await asyncio.sleep(self._input_wait(self._read_deferral))
        self._schedule_fold()
        self.post_message(SourceEnded(self.store.ended or "the event stream closed"))

    def _fall_back_to_snapshot(self, source: EventSource) -> None:
        """Too far behind to fold what waits: drop it and take a fresh snapshot, which says the same for less."""
        if not source.resync():
            return  # a replay or a broker cannot resend; fold on, the mark says how far behind
        self.resyncs += 1
        self.skipped += len(self.pending)
        # What is dropped is superseded by the snapshot; connection news is kept.
        self.pending = [item for item in self.pending if isinstance(item, ConnectionChanged)]
        self._awaiting_snapshot = True

    def _schedule_fold(self) -> None:
        if self._fold_scheduled:
            return
        self._fold_scheduled = True
        wait = self._last_fold + _FRAME - time.monotonic()
        if wait > 0.001:
            self.set_timer(wait, self.fold_pending, name="tui.fold")
        else:
            self.call_later(self.fold_pending)

    def fold_pending(self) -> None:
        """Fold what waits (within a frame's budget) and repaint once.

        A key comes first: while one was just typed the fold waits (``_INPUT_QUIET``), and a
        key arriving during the fold ends it at the next slice.
        """
        self._fold_scheduled = False
        wait = self._input_wait(self._fold_deferral)
        if wait > 0:
            self._fold_scheduled = True
            self.set_timer(wait, self.fold_pending, name="tui.fold")
            return
        self.folds += 1
        self._last_fold = started = time.monotonic()
        pending = self.pending
        taken = 0
        store = self.store
        snapshots = store.fold.snapshots
        while taken < len(pending):
            store.apply_batch(pending[taken : taken + _FOLD_SLICE])
            taken += _FOLD_SLICE
            if time.monotonic() - started > _FOLD_BUDGET or self.input_at > started:
                break
        del pending[:taken]
        if store.total >= max(_FREEZE_FROM, 2 * self._frozen_jobs):
            self._freeze_model()
        if store.fold.snapshots != snapshots and (self._snapshot_trim is None or self._snapshot_trim.done()):
            # Decoding a 100,000-job snapshot leaves 50-90 MB free in the C allocator's heap; the
            # next full collection's hand-back can be 20 s away, through the flood of fetches
            # that follows a snapshot, at the viewer's peak. Off the loop: it walks the whole heap.
            self._snapshot_trim = asyncio.get_running_loop().run_in_executor(None, release_free_memory)
        if pending:
            self._schedule_fold()
        self.store_changed()

    def _freeze_model(self) -> None:
        """Take the view model out of the collector's full passes, and the full passes off the clock.

        A full collection walks every object tracked: 15 ms at 10,000 jobs and ten times that at
        100,000, at any moment, a key's included. What the app holds once the jobs are in lives
        as long as they do; frozen (after one collection, so no garbage is frozen with it), it is
        never walked again. Done again each time the number of jobs doubles.

        Freezing once is not enough in a flood: every change makes new records and history that
        the collector's counter soon sends to a full pass (every 8-10 s at 100,000 jobs, 40-180 ms
        each, keys waiting behind it). From here on the session's own pace rules the full passes
        here too: none between, one every ``_GC_EVERY`` from the tick that freezes what it leaves.
        """
        self._frozen_jobs = self.store.total
        gc.collect()
        gc.freeze()
        if self.gc_pace is None:
            # Collected from the tick, between keys (_collect_garbage): no schedule of its own.
            self.gc_pace = CollectionPace(every=None)
            self.gc_pace.start()

    @property
    def caught_up(self) -> bool:
        """Everything read so far is folded in and shown."""
        return not self.pending and not self._fold_scheduled and not self._awaiting_snapshot and not self._panels_due

    @property
    def behind(self) -> int:
        """Events read but not yet shown."""
        return len(self.pending)

    def store_changed(self) -> None:
        if not self.showing:
            return  # a fold that was due when the app began to close: nothing left to show it on
        failures, groups = self.store.take_news()
        if self.notifier.news(failures, groups):
            self.notify(f"{len(failures)} failed, {len(groups)} groups finished", title="ganga-monitor")
        if not self.view_paused:
            self._repaint()
        else:
            self._show_status()

    @on(SourceEnded)
    def source_ended(self, message: SourceEnded) -> None:
        self.ended = message.reason
        if self.pending:
            self.fold_pending()  # the last events before the end are shown with it
        if self.screen_stack:
            self._repaint(panels=True)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            error = event.worker.error
            self.ended = f"{event.worker.name} failed: {error!r}"
            self.notify(self.ended, severity="error", timeout=30)
            self._show_status()

    def _on_tick(self) -> None:
        if not self.showing:
            return
        if self.pending and time.monotonic() - self._last_fold > _FOLD_STALL:
            # A fold was due and never ran (seen once in a benchmark run: the view stopped with
            # tens of thousands of events waiting while keys and ticks went on). Whatever lost
            # it, the view must not stop: start one, and count it.
            self.fold_restarts += 1
            self._fold_scheduled = False
            self._schedule_fold()
        wait = self._input_wait(self._tick_deferral)
        if wait > 0:
            if not self._tick_due:
                self._tick_due = True
                self.set_timer(wait, self._deferred_tick, name="tui.tick.deferred")
            return
        self._collect_garbage()
        self.update_view()

    def _collect_garbage(self) -> None:
        """A full collection of what was made since the last, at a quiet moment, every ``_GC_EVERY``.

        With the collector's own full passes off, cyclic garbage waits for the pace; the view
        makes some (0.45 MB a second in a 100,000-job flood), so it is collected often, and
        only ever between keys. Each pass walks only what the last one left unfrozen; every
        ``_SWEEP_EVERY``, once no key has come for ``_SWEEP_QUIET``, a sweep walks everything.
        """
        pace = self.gc_pace
        now = time.monotonic()
        if pace is None or now - self._collected_at < _GC_EVERY:
            return
        self._collected_at = now
        since_sweep = now - self._swept_at
        if (since_sweep >= _SWEEP_EVERY and now - self.input_at >= _SWEEP_QUIET) or since_sweep >= 2 * _SWEEP_EVERY:
            # Each pass froze whatever was alive, a screen being looked at among it; once closed,
            # such a screen is cyclic garbage that only a sweep finds.
            self._swept_at = now
            pace.sweep()
        else:
            pace.collect()
        # What the pass freed, and what folding and decoding let go of since (a 100,000-job
        # snapshot's tens of MB among it), stays in the C allocator's heap until handed back:
        # 46 MB of a viewer's 316 at 100,000 jobs. Off the loop: it walks the whole heap.
        self._trim = asyncio.get_running_loop().run_in_executor(None, release_free_memory)

    def _deferred_tick(self) -> None:
        self._tick_due = False
        self._on_tick()

    def update_view(self, *, full: bool = False) -> None:
        """The time-driven upkeep: expire faded operations, recheck warnings, repaint ages.

        Args:
            full: recheck every job's warnings now, not a tick's share of them.
        """
        now = self.clock()
        self.store.expire_ops(now)
        if full:
            self.store.scan_warnings(now)
        else:
            self.store.scan_warnings(now, budget=_WARNING_SLICE)
            if _WARNING_BUDGET > _WARNING_SLICE:
                self.call_later(self._scan_warnings_on, _WARNING_BUDGET - _WARNING_SLICE)
        if not self.view_paused:
            self._repaint(panels=True)

    def _scan_warnings_on(self, budget: int) -> None:
        """The rest of a tick's warning checks, a slice per message, after any key that came meanwhile."""
        if not self.screen_stack:
            return
        wait = self._input_wait(self._tick_deferral)
        if wait > 0:
            self.set_timer(wait, lambda: self._scan_warnings_on(budget), name="tui.warnings")
            return
        self.store.scan_warnings(self.clock(), budget=min(budget, _WARNING_SLICE), resume=True)
        if budget > _WARNING_SLICE:
            self.call_later(self._scan_warnings_on, budget - _WARNING_SLICE)

    def _repaint(self, *, panels: bool = False) -> None:
        """Bring the screen up to date: the table and the lines above it each frame, the panels less often.

        Args:
            panels: repaint the backends, progress and operations panels now, however recently
                they were (the tick, a full upkeep, a thawed view).
        """
        if not self.showing:
            return
        if panels:
            self._repaint_panels(now=True)
        elif not self._panels_due:
            since = time.monotonic() - self._panels_at
            if since >= _PANEL_GAP:
                self._repaint_panels()
            else:
                # At most one pending: the panels catch up within _PANEL_GAP of the first skipped frame.
                self._panels_due = True
                self.set_timer(_PANEL_GAP - since, self._repaint_panels, name="tui.panels")
        with self.batch_update():
            self.main_screen.query_one(JobTable).refresh_from_store()
            screen = self.screen
            refresh = getattr(screen, "refresh_from_store", None)
            if refresh is not None and screen is not self.screen_stack[0] and screen.is_mounted:
                refresh()

    def _repaint_panels(self, *, now: bool = False) -> None:
        """The side and top panels, the counts line and the status bar.

        Args:
            now: even if a key was just typed (the user asked for a full repaint).
        """
        wait = 0.0 if now else self._input_wait(self._panels_deferral)
        if wait > 0:
            self._panels_due = True
            self.set_timer(wait, self._repaint_panels, name="tui.panels")
            return
        self._panels_due = False
        self._panels_at = time.monotonic()
        if not self.showing or self.view_paused:
            return
        with self.batch_update():
            # The counts and status lines change with every fold in a flood; like the panels, they
            # are redrawn at most every _PANEL_GAP (a user's action redraws them at once).
            self._show_counts()
            self._show_status()
            self.main_screen.query_one(BackendsPanel).refresh_from_store()
            self.main_screen.query_one("#overall", ProgressPanel).refresh_from_store()
            self.main_screen.query_one("#groups", ProgressPanel).refresh_from_store()
            self.main_screen.query_one(OpQueue).refresh_from_store(self.clock())

    def _show_counts(self) -> None:
        store = self.store
        text = Text()
        if store.filter.active:
            text.append(f"{store.row_count} of {store.total} shown", style="bold")
            text.append(f" │ filter {store.filter.describe()} │ ", style="bold")
        else:
            text.append(f"{store.total} jobs │ ", style="bold")
        for status in JobStatus:
            count = store.counts.get(status, 0)
            if count:
                text.append(f"{status.value} ", style="dim")
                text.append(f"{count} ", style="bold")
        show(self.main_screen.query_one("#counts", Static), text)

    def _show_status(self) -> None:
        store = self.store
        if self.source is None:
            step = f": {self.demo_step}" if self.demo_step else ""
            where = f"starting the simulated session{step} ..." if self.ended is None else ""
        else:
            where = self.source.description
        text = Text()
        text.append(" ganga-monitor ", style="bold reverse")
        text.append(f" {where} ")
        if store.heartbeat is not None or store.total:
            text.append(f"│ {store.final}/{store.total} final ")
        if store.warned:
            text.append(f"│ {len(store.warned)} warnings ", style="bold yellow")
        if store.rejections:
            text.append(f"│ {store.rejections} rejected ", style="yellow")
        if not store.connected:
            text.append("│ DISCONNECTED ", style="bold red")
        if self.behind > _BEHIND_MARK or self._awaiting_snapshot:
            behind = "catching up from a snapshot" if self._awaiting_snapshot else f"behind by {self.behind} events"
            text.append(f"│ {behind} ", style="bold reverse yellow")
        for fault in store.faults:
            text.append(f"│ local fault: {fault.what} ", style="bold red")
        if self.ended is not None:
            text.append(f"│ ended: {self.ended} ", style="bold")
        if self.view_paused:
            text.append("│ VIEW FROZEN (space) ", style="bold reverse")
        if self.notifications:
            text.append("│ notify on ", style="dim")
        if self.last_ack is not None:
            description, ack = self.last_ack
            first_line = ack.message.splitlines()[0] if ack.message else ""
            text.append(f"│ {'✓' if ack.ok else '✗'} {description}: {first_line}")
        show(self.main_screen.query_one("#status-bar", Static), text)

    # -- commands to the session ---------------------------------------------------------------

    async def send_command(self, command: Command, description: str, *, toast: bool = True) -> CommandAcked | None:
        """Send a command through the source and show its acknowledgement.

        Args:
            command: what to ask of the session.
            description: what is asked, in words, for the status bar.
            toast: also pop up the acknowledgement (not for answers shown elsewhere, like output tails).

        Returns:
            The acknowledgement, or ``None`` when there is no source yet.
        """
        if self.source is None:
            self.notify("no session yet", severity="warning")
            return None
        try:
            ack = await self.source.send(command)
        except Exception as exc:  # noqa: BLE001 - a lost connection must not end the viewer
            ack = CommandAcked(at=self.clock(), command_id=command.command_id, ok=False, message=str(exc))
        self.last_ack = (description, ack)
        self.store.note_ack(ack)
        first_line = ack.message.splitlines()[0][:80] if ack.message else ""
        if toast:
            self.notify(first_line or description, title=description, severity="information" if ack.ok else "error")
        self.post_message(CommandAnswered(description, ack))
        self._show_status()
        return ack

    def request(self, command: Command, description: str) -> Worker[CommandAcked | None]:
        """Send a command in the background (the UI never waits for the session)."""
        return self.run_worker(self.send_command(command, description), group="commands")

    def _target_backend(self) -> str | None:
        row = self.main_screen.query_one(JobTable).cursor_row_data
        if row is not None:
            return row.backend
        return next(iter(self.store.backends), None)

    def action_refresh_job(self) -> None:
        """Poll the highlighted job now."""
        row = self.main_screen.query_one(JobTable).cursor_row_data
        if row is None:
            self.notify("no job highlighted", severity="warning")
            return
        self.request(RefreshJob(job_id=row.job_id), f"refresh job {row.job_id}")

    def action_collect_output(self) -> None:
        """Collect the highlighted job's outputs now, ahead of queued fetches (also retries a failed collection)."""
        row = self.main_screen.query_one(JobTable).cursor_row_data
        if row is None:
            self.notify("no job highlighted", severity="warning")
            return
        self.request(CollectOutput(job_id=row.job_id), f"collect outputs of job {row.job_id}")

    def action_toggle_backend_pause(self, backend: str | None = None) -> None:
        """Pause the highlighted job's backend, or resume it if paused."""
        name = backend or self._target_backend()
        if name is None:
            return
        record = self.store.backends.get(name)
        if record is not None and record.paused:
            self.request(ResumeBackend(backend=name), f"resume {name}")
        else:
            self.request(PauseBackend(backend=name), f"pause {name}")

    def action_set_interval(self, backend: str | None = None) -> None:
        """Ask for a new poll interval of the highlighted job's backend."""
        name = backend or self._target_backend()
        if name is None:
            return
        record = self.store.backends.get(name)

        def chosen(seconds: float | None) -> None:
            if seconds is not None:
                self.request(SetInterval(backend=name, seconds=seconds), f"interval of {name}")

        self.push_screen(IntervalPrompt(name, record.poll_interval if record is not None else 0.0), chosen)

    # -- the view ------------------------------------------------------------------------------

    def watch_view_paused(self, paused: bool) -> None:
        self.screen.set_class(paused, "-frozen")
        if not paused:
            self._repaint(panels=True)
        self._show_status()

    def action_toggle_view_pause(self) -> None:
        """Freeze the screen, or bring it up to date again."""
        self.view_paused = not self.view_paused

    def watch_notifications(self, enabled: bool) -> None:
        self.notifier.enabled = enabled
        self._show_status()

    def action_replay(self, control: str) -> None:
        """Step, pause, speed up, slow down or seek a ``--replay``."""
        self.notify(control_replay(self.source, control), timeout=3)

    def action_toggle_notifications(self) -> None:
        """Bell and desktop notification on failures and finished groups: on or off."""
        self.notifications = not self.notifications
        self.notify(f"notifications {'on' if self.notifications else 'off'}")

    def _write_terminal(self, text: str) -> None:
        # Textual has no public call for raw escapes; App.bell() writes through the driver the same way.
        driver = self._driver
        if not self.is_headless and driver is not None:
            driver.write(text)

    def action_toggle_side(self) -> None:
        """Show or hide the groups and operations panel (hidden by default on narrow terminals)."""
        self.screen.toggle_class("-side-toggled")

    def action_help(self) -> None:
        """List every key."""
        self.push_screen(
            HelpScreen(
                [
                    ("Everywhere", self.BINDINGS),
                    ("Job table", JobTable.BINDINGS),
                    ("Job detail", JobDetailScreen.BINDINGS),
                    ("Warnings view", WarningsScreen.BINDINGS),
                    ("Command palette (:)", [Binding("ctrl+p", "command_palette", "also opens it")]),
                ]
            )
        )

    def action_warnings(self) -> None:
        """Show every job that needs a look."""
        self.store.scan_warnings(self.clock())
        self.push_screen(WarningsScreen())

    def open_job(self, job_id: str) -> None:
        """Show one job's detail, on the one detail screen the app keeps."""
        screen = self._detail_screen
        if screen is None:
            screen = self._detail_screen = JobDetailScreen(job_id)
            self.install_screen(screen, name="job-detail")
        else:
            screen.show_job(job_id)
        if screen not in self.screen_stack:
            self.push_screen(screen)

    @on(JobTable.JobSelected)
    def job_selected(self, event: JobTable.JobSelected) -> None:
        self.open_job(event.job_id)

    # -- filter and sort -----------------------------------------------------------------------

    def action_filter(self) -> None:
        """Open the filter box; the table narrows as you type."""
        box = self.main_screen.query_one("#filter", Input)
        # Focus now, not at the next idle (Widget.focus): keys already queued go to the box.
        self.main_screen.set_focus(box)

    def apply_filter(self, query: str) -> None:
        """Show only the jobs ``query`` matches (see the help screen for the words)."""
        box = self.main_screen.query_one("#filter", Input)
        if box.value != query:
            with box.prevent(Input.Changed):
                box.value = query
        self._filter_query = query
        self.store.set_filter(JobFilter.parse(query))
        self.main_screen.query_one(JobTable).refresh_from_store(force=True)
        self._show_counts()

    @on(Input.Changed, "#filter")
    def filter_typed(self, event: Input.Changed) -> None:
        # Typed fast, several Changed wait in the queue: each carries the text of its time, the
        # box has the latest. Applying an older one would set the box back and move its cursor.
        query = event.input.value
        if query != self._filter_query:
            self.apply_filter(query)

    @on(Input.Submitted, "#filter")
    def filter_done(self) -> None:
        self.main_screen.query_one(JobTable).focus()

    def action_clear_filter(self) -> None:
        """Drop the filter and go back to the table."""
        self.apply_filter("")
        self.main_screen.query_one(JobTable).focus()

    def action_cycle_status_filter(self) -> None:
        """Show only running, submitted, completing, completed, failed jobs in turn, then all."""
        current = self.store.filter.statuses
        now = next(iter(current)) if len(current) == 1 else None
        index = _STATUS_CYCLE.index(now) if now in _STATUS_CYCLE else 0
        status = _STATUS_CYCLE[(index + 1) % len(_STATUS_CYCLE)]
        word = None if status is None else f"s:{status.value}"
        self.apply_filter(_replace_word(self.main_screen.query_one("#filter", Input).value, ("s", "status"), word))

    def action_cycle_backend_filter(self) -> None:
        """Show one backend's jobs at a time, then all."""
        names: list[str | None] = [None, *sorted(self.store.backends)]
        current = self.store.filter.backends
        now = next(iter(current)) if len(current) == 1 else None
        index = names.index(now) if now in names else 0
        name = names[(index + 1) % len(names)]
        word = None if name is None else f"b:{name}"
        self.apply_filter(_replace_word(self.main_screen.query_one("#filter", Input).value, ("b", "backend"), word))

    def action_cycle_sort(self) -> None:
        """Sort by the next column."""
        index = SORT_KEYS.index(self.store.sort_key)
        self.sort_by(SORT_KEYS[(index + 1) % len(SORT_KEYS)], reverse=self.store.sort_reverse)

    def action_reverse_sort(self) -> None:
        """Flip the sort order."""
        self.sort_by(self.store.sort_key, reverse=not self.store.sort_reverse)

    def sort_by(self, key: str, *, reverse: bool = False) -> None:
        """Sort the table by a column (one of ``SORT_KEYS``)."""
        if key not in SORT_KEYS:
            raise ValueError(f"unknown sort column {key!r}")
        self.store.sort(key, reverse=reverse)
        self.main_screen.query_one(JobTable).refresh_from_store(force=True)
        self._show_counts()


def run_app(config: SessionConfig, *, notifications: bool = False, keep_session: bool = False) -> int:
    """Run the TUI on a demo session in a child process until the user quits.

    Returns:
        The process exit status.
    """

    async def main() -> int:
        app = GangaMonitorApp(demo=config, notifications=notifications, keep_session=keep_session)
        try:
            await app.run_async()
        finally:
            await app.close_session()
            farewell = app.farewell()
            if farewell:
                print(f"ganga-monitor-tui: {farewell}", file=sys.stderr)
        return app.return_code or 0

    return asyncio.run(main())
