"""One live run: the demo in tmux, keys typed through it, and everything the run's processes did.

The run starts ``ganga-monitor-tui --demo --jobs N`` in a private tmux server at 200x50,
waits for the job table, then types the key cycle of :mod:`.keys` one step at a time, a
pause between steps, until every job is final and a last cycle has run (or a time cap).
Each timed step is measured from ``send-keys`` until a capture of the pane (every 5 ms)
shows its result. Between keys the pane is read twice a second for jobs per state,
warnings, rejections and the lag the backends panel shows. A sampler process records
CPU and RSS of the pane's process tree; if the demo serves a socket, a headless JSON
viewer records the session's own account (:mod:`.session_feed`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from monitor_core.backends.local import WRAPPER_NAME

from .keys import CYCLE, KeyStep, at_rest
from .profile import Profiler
from .screen import Screen, read_screen
from .session_feed import JsonViewer, find_socket
from .tmux import TmuxPane

__all__ = ["RunOptions", "RunRecord", "demo_command", "run_live"]

_POLL = 0.005
_SCREEN_SAMPLE_EVERY = 0.5
_STARTUP_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How one live run goes."""

    jobs: int
    work_dir: Path
    key_interval: float = 1.0
    """Pause after a step's result shows (or times out) before the next step."""
    key_timeout: float = 15.0
    max_seconds: float = 900.0
    """Stop typing and quit the TUI after this long even if jobs are not final."""
    tail_seconds: float = 5.0
    """Keep typing this long after every job is final (and finish the cycle)."""
    demo_args: tuple[str, ...] = ()
    command: str | None = None
    """A shell command to run instead of the demo, with ``{jobs}``, ``{state_dir}`` and ``{runtime}``
    filled in (to measure another way of starting a session the same way)."""
    keys: tuple[str, ...] = ()
    """Names of the cycle's steps to type (default: all)."""
    profile: bool = False
    width: int = 200
    height: int = 50


@dataclass(slots=True)
class RunRecord:
    """What one run measured, raw; :mod:`.report` turns it into figures."""

    jobs: int
    command: list[str]
    started: float = 0.0
    first_table: float | None = None
    """Seconds from launch until the job table showed rows."""
    keys: list[dict[str, Any]] = field(default_factory=list)
    screen: list[dict[str, Any]] = field(default_factory=list)
    recoveries: int = 0
    died: bool = False
    """The TUI exited before the benchmark quit it."""
    missed_screens: list[str] = field(default_factory=list)
    """The screen when a key timed out (the first few), to tell a slow app from a missed sign."""
    all_final_at: float | None = None
    stopped: str = ""
    quit_seconds: float | None = None
    exit_status: int | None = None
    last_screen: str = ""
    socket: str | None = None
    session_pid: int | None = None
    tui_pid: int | None = None
    viewer_pid: int | None = None
    viewer_stderr: str = ""
    feed_path: str | None = None
    processes_path: str = ""
    leftovers: list[str] = field(default_factory=list)
    profiles: dict[str, Any] = field(default_factory=dict)
    profile_windows: dict[str, list[Any]] = field(default_factory=dict)


def _dead_status(text: str) -> int | None:
    """The status in tmux's "Pane is dead (status N, ...)" line, if shown."""
    found = re.search(r"Pane is dead \((?:status (\d+)|signal (\d+))", text)
    if found is None:
        return None
    return int(found.group(1)) if found.group(1) else 128 + int(found.group(2))


def demo_command(jobs: int, state_dir: Path, extra: tuple[str, ...]) -> list[str]:
    """``ganga-monitor-tui --demo --jobs N``: the installed console script beside this Python, if any."""
    script = Path(sys.executable).with_name("ganga-monitor-tui")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "ganga_tui"]
    return [*head, "--demo", "--jobs", str(jobs), "--state-dir", str(state_dir), *extra]


class _Run:
    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.work = options.work_dir
        self.work.mkdir(parents=True, exist_ok=True)
        self.runtime = self.work / "runtime"
        self.runtime.mkdir(mode=0o700, exist_ok=True)
        self.state_dir = self.work / "state"
        self.env = dict(os.environ)
        # A runtime directory of the run's own: the demo's socket is the only one found there.
        self.env["XDG_RUNTIME_DIR"] = str(self.runtime)
        self.env["XDG_STATE_HOME"] = str(self.work / "xdg-state")
        self.env.pop("TMUX", None)
        # The pane's size, also where Python looks first (shutil.get_terminal_size): an inherited
        # COLUMNS/LINES (a test runner's, a CI's) would otherwise size the app, not the pane.
        self.env["COLUMNS"], self.env["LINES"] = str(options.width), str(options.height)
        self.command = demo_command(options.jobs, self.state_dir, options.demo_args)
        if options.command is not None:
            filled = options.command.format(jobs=options.jobs, state_dir=self.state_dir, runtime=self.runtime)
            self.command = ["sh", "-c", filled]
        self.record = RunRecord(jobs=options.jobs, command=self.command)
        self.pane: TmuxPane | None = None
        self.viewer: JsonViewer | None = None
        self.sampler: subprocess.Popen[bytes] | None = None
        self.extra_pids = self.work / "extra-pids"
        self.profilers: list[Profiler] = []
        self._last_sample = 0.0

    # -- screen --------------------------------------------------------------------------------

    def look(self) -> Screen:
        assert self.pane is not None
        screen = read_screen(self.pane.capture())
        now = time.time()
        if now - self._last_sample >= _SCREEN_SAMPLE_EVERY and screen.dashboard and screen.counts:
            self._last_sample = now
            self.record.screen.append(
                {
                    "t": now,
                    "counts": screen.counts if screen.filter_text is None else None,
                    "final": screen.final,
                    "total": screen.total,
                    "warnings": screen.warnings,
                    "rejected": screen.rejected,
                    "behind": screen.behind,
                    "lag": screen.lag,
                }
            )
        if (
            self.record.all_final_at is None
            and screen.final is not None
            and screen.final == screen.total == self.options.jobs
        ):
            self.record.all_final_at = now
        return screen

    def wait_for(self, arrived: Any, timeout: float, began: float | None = None) -> tuple[Screen, float | None]:
        """Poll every 5 ms until ``arrived(screen)``; the screen and the seconds since ``began``, or None."""
        began = time.perf_counter() if began is None else began
        deadline = began + timeout
        tick = began
        while True:
            screen = self.look()
            now = time.perf_counter()
            if arrived(screen):
                return screen, now - began
            if now >= deadline:
                return screen, None
            tick += _POLL
            time.sleep(max(0.0, tick - time.perf_counter()))

    def idle(self, seconds: float) -> None:
        end = time.perf_counter() + seconds
        while (left := end - time.perf_counter()) > 0:
            time.sleep(min(left, _SCREEN_SAMPLE_EVERY))
            self.look()
            self.attach_when_served()
        self.check_alive()

    def check_alive(self) -> None:
        """Notice the TUI exiting on its own (a crash): the run stops, its last screen kept."""
        assert self.pane is not None
        dead, status = self.pane.pane_state()
        if dead and not self.record.died:
            self.record.died = True
            self.record.last_screen = self.pane.capture()
            self.record.exit_status = status if status is not None else _dead_status(self.record.last_screen)
            self.record.stopped = f"the TUI exited by itself (status {self.record.exit_status})"

    # -- helpers beside the TUI ---------------------------------------------------------------

    def tree_pids(self) -> set[int]:
        assert self.record.tui_pid is not None
        try:
            top = psutil.Process(self.record.tui_pid)
            return {top.pid, *(child.pid for child in top.children(recursive=True))}
        except psutil.Error:
            return set()

    def attach_when_served(self) -> None:
        if self.viewer is not None or self.record.socket == "none":
            return
        found = find_socket(self.runtime, self.state_dir, self.tree_pids())
        if found is None:
            if self.record.first_table is not None and time.time() - self.record.started > self.record.first_table + 20:
                # The table has shown for a while and nothing serves: the session runs inside the TUI.
                self.record.socket = "none"
            return
        path, pid = found
        self.record.socket = str(path)
        self.record.session_pid = pid
        feed = self.work / "session-events.jsonl"
        self.viewer = JsonViewer(path, feed, env=self.env)
        self.record.viewer_pid = self.viewer.process.pid
        self.record.feed_path = str(feed)
        self.extra_pids.write_text(f"{self.viewer.process.pid}\n" + (f"{pid}\n" if pid else ""))
        if self.options.profile and pid is not None and pid != self.record.tui_pid:
            self.start_profiler(pid, "session")

    def start_profiler(self, pid: int, name: str) -> None:
        directory = self.work / "profile"
        directory.mkdir(exist_ok=True)
        profiler = Profiler(pid, directory, name=name)
        profiler.start()
        self.profilers.append(profiler)

    # -- the run -------------------------------------------------------------------------------

    def step(self, step: KeyStep) -> None:
        assert self.pane is not None
        before = self.look()
        already = step.arrived(before)
        sent = time.time()
        began = time.perf_counter()
        self.pane.send(*step.keys, literal=step.literal)
        screen, took = self.wait_for(step.arrived, self.options.key_timeout, began)
        if not step.timed:
            return
        self.record.keys.append(
            {
                "key": step.name,
                "t": sent,
                "seconds": took,
                "timed_out": took is None,
                "vacuous": already,
                "final": screen.final,
            }
        )
        if took is None and len(self.record.missed_screens) < 5:
            self.record.missed_screens.append(
                f"{step.name} at {sent - self.record.started:.1f}s:\n" + "\n".join(screen.lines)
            )

    def settle(self) -> None:
        """Bring the TUI back to the dashboard without a filter before a new cycle."""
        _, took = self.wait_for(at_rest, 2.0)
        tries = 0
        while took is None and tries < 3:
            assert self.pane is not None
            self.record.recoveries += 1
            self.pane.send("Escape")
            _, took = self.wait_for(at_rest, self.options.key_timeout / 3)
            tries += 1

    def run(self) -> RunRecord:
        options = self.options
        self.record.started = time.time()
        with TmuxPane(self.command, width=options.width, height=options.height, env=self.env, cwd=Path.cwd()) as pane:
            self.pane = pane
            self.record.tui_pid = pane.pane_pid
            self.extra_pids.write_text("")
            processes = self.work / "processes.jsonl"
            self.record.processes_path = str(processes)
            self.sampler = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.live.processes",
                    "--root",
                    str(pane.pane_pid),
                    "--extra",
                    str(self.extra_pids),
                    "--out",
                    str(processes),
                ],
                env=os.environ.copy(),
            )
            if options.profile and pane.pane_pid is not None:
                self.start_profiler(pane.pane_pid, "tui")
            try:
                self.drive()
            finally:
                self.finish()
        return self.record

    def drive(self) -> None:
        options = self.options
        launched = time.perf_counter()
        _screen, took = self.wait_for(lambda s: s.dashboard and bool(s.row_ids), _STARTUP_TIMEOUT)
        if took is None:
            self.record.stopped = "the job table never showed"
            return
        self.record.first_table = time.perf_counter() - launched
        deadline = launched + options.max_seconds
        cycle = [step for step in CYCLE if not options.keys or step.name in options.keys]
        index = 0
        done_cycles = 0
        while True:
            self.attach_when_served()
            if index % len(cycle) == 0:
                if (
                    self.record.all_final_at is not None
                    and time.time() - self.record.all_final_at >= options.tail_seconds
                ):
                    done_cycles += 1
                    if done_cycles > 1:
                        self.record.stopped = "every job final"
                        return
                if time.perf_counter() >= deadline:
                    self.record.stopped = f"time cap ({options.max_seconds:.0f}s)"
                    return
                self.settle()
            self.step(cycle[index % len(cycle)])
            index += 1
            self.idle(options.key_interval)
            if self.record.died:
                return

    def finish(self) -> None:
        assert self.pane is not None
        pane = self.pane
        with contextlib.suppress(Exception):
            self.check_alive()
        if not self.record.died:
            with contextlib.suppress(Exception):
                self.record.last_screen = pane.capture()
                self.settle()
            began = time.perf_counter()
            with contextlib.suppress(Exception):
                pane.send("q")
                while time.perf_counter() - began < 60:
                    dead, status = pane.pane_state()
                    if dead and self.record.quit_seconds is None:
                        self.record.quit_seconds = time.perf_counter() - began
                    if dead and status is None:
                        status = _dead_status(pane.capture())
                    if dead and status is not None:
                        self.record.exit_status = status
                        break
                    if (
                        self.record.quit_seconds is not None
                        and time.perf_counter() - began > self.record.quit_seconds + 5
                    ):
                        break  # the pane closed but tmux never learnt the exit status
                    time.sleep(0.05)
        for profiler in self.profilers:
            profiler.stop()
            self.record.profile_windows[profiler.name] = [
                (window.started, window.ended, window.samples, window.stacks) for window in profiler.windows
            ]
            if profiler.errors:
                self.record.profiles[f"{profiler.name} errors"] = profiler.errors
        if self.viewer is not None:
            self.record.viewer_stderr = self.viewer.stop()[-2000:]
        time.sleep(1.0)
        if self.sampler is not None:
            self.sampler.send_signal(signal.SIGTERM)
            try:
                self.sampler.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.sampler.kill()
        self._reap_leftovers()

    def _reap_leftovers(self) -> None:
        """Processes of the run still alive after the TUI quit: noted, then stopped (by pid)."""
        with contextlib.suppress(Exception):
            assert self.pane is not None
            self.pane.close()
        survivors = []
        for pid in {self.record.session_pid, self.record.viewer_pid} - {None}:
            assert pid is not None
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    survivors.append(process)
        for line in (
            Path(self.record.processes_path).read_text().splitlines()[-3:] if self.record.processes_path else []
        ):
            with contextlib.suppress(ValueError):
                for pid, *_ in json.loads(line)["p"]:
                    with contextlib.suppress(psutil.Error):
                        process = psutil.Process(pid)
                        # Started during the run, so not a stranger that reused a pid.
                        if (
                            process.create_time() >= self.record.started - 1
                            and process.status() != psutil.STATUS_ZOMBIE
                            and process not in survivors
                        ):
                            survivors.append(process)
        mine = os.getpid()
        local_jobs = local_job_sessions(survivors, self.state_dir)
        for process in survivors:
            # OSError: os.getsid of a process that ended since it was listed.
            with contextlib.suppress(psutil.Error, OSError):
                if process.pid == mine:
                    continue
                command = " ".join(process.cmdline())
                # The simulated grid outlives a session that left jobs on it, as a real grid does
                # (a resume finds it; idle, it stops by itself), and so do the local jobs still
                # running when the demo stopped, as a batch system's would (a resume adopts
                # them; each ends by itself): expected, not leftovers.
                if _GRID_MODULE not in command and os.getsid(process.pid) not in local_jobs:
                    self.record.leftovers.append(command[:160])
                process.terminate()
        psutil.wait_procs(survivors, timeout=5)


_GRID_MODULE = "monitor_core.sim.dirac_server"


def local_job_sessions(processes: list[psutil.Process], state_dir: Path) -> set[int]:
    """The session ids of the demo's local jobs among ``processes``: each job's wrapper leads a session of its own."""
    wrappers = str(state_dir / "local")
    sessions = set()
    for process in processes:
        with contextlib.suppress(psutil.Error, OSError):
            if process.pid == os.getsid(process.pid) and any(
                part.startswith(wrappers) and part.endswith(WRAPPER_NAME) for part in process.cmdline()
            ):
                sessions.add(process.pid)
    return sessions


def run_live(options: RunOptions) -> RunRecord:
    """Run the demo once with ``options.jobs`` jobs and return what was measured."""
    if options.work_dir.exists():
        shutil.rmtree(options.work_dir)
    return _Run(options).run()
