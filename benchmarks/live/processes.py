"""CPU and RSS of every process of a run, sampled each second, in a process of its own.

``python -m benchmarks.live.processes --root PID --extra FILE --out FILE`` follows the
process tree under ``PID`` (the tmux pane's program and all it starts) plus the pids
listed in ``FILE`` (processes the harness starts beside it, such as a viewer), and writes
one JSON line per tick: ``{"t", "cpu_total", "load1", "p": [[pid, ppid, cpu%, rss], ...],
"new": {pid: command line}}``. It runs apart from the harness so that walking the tree
never holds up the 5 ms screen polling. It stops on SIGTERM or when everything it
follows has exited.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import time
from pathlib import Path

import psutil

__all__ = ["classify", "main"]


def classify(
    command: list[str],
    *,
    pid: int,
    tui_pid: int | None,
    session_pid: int | None,
    viewer_pid: int | None,
    tui_command: list[str] | None = None,
    session_command: list[str] | None = None,
) -> str:
    """Name the part of the run a process plays, from its pid and command line."""
    if pid == tui_pid:
        return "tui"
    if tui_command and command == tui_command:
        # Forked by the TUI and not yet exec'd (a local job being started): short-lived.
        return "tui forks"
    if pid == session_pid:
        return "session"
    if session_command and command == session_command:
        # The same for the session; its pages are the session's own, and counting them again
        # under "session" doubled its RSS in the second it was sampled.
        return "session forks"
    if pid == viewer_pid:
        return "json viewer"
    text = " ".join(command)
    if "dirac_server" in text:
        return "dirac service"
    if "_worker_main" in text:
        return "dirac client workers"
    if "py-spy" in text:
        return "profiler"
    if "monitor_core" in text or "ganga_tui" in text or "ganga-monitor" in text:
        # A demo session started as a child of the TUI, found before its socket names its pid.
        return "session"
    return "local jobs"


def _read_extra(path: Path | None) -> set[int]:
    if path is None:
        return set()
    try:
        return {int(word) for word in path.read_text().split()}
    except (OSError, ValueError):
        return set()


def sample_forever(root: int, extra_file: Path | None, out: Path, every: float) -> None:
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    known: dict[int, psutil.Process] = {}
    named: set[int] = set()
    psutil.cpu_percent(None)
    with out.open("w") as sink:
        while not stop:
            tick = time.time()
            wanted: dict[int, psutil.Process] = {}
            for pid in {root, *_read_extra(extra_file)}:
                try:
                    top = known.get(pid) or psutil.Process(pid)
                    wanted[pid] = top
                    for child in top.children(recursive=True):
                        wanted.setdefault(child.pid, child)
                except psutil.Error:
                    continue
            if not wanted:
                break
            rows = []
            new: dict[int, list[str]] = {}
            for pid, process in wanted.items():
                process = known.setdefault(pid, process)
                try:
                    with process.oneshot():
                        cpu = process.cpu_percent(None)
                        rss = process.memory_info().rss
                        ppid = process.ppid()
                        if pid not in named:
                            new[pid] = process.cmdline()
                except psutil.Error:
                    continue
                named.add(pid)
                rows.append([pid, ppid, round(cpu, 1), rss])
            for pid in list(known):
                if pid not in wanted:
                    del known[pid]
            record = {
                "t": round(tick, 3),
                "cpu_total": psutil.cpu_percent(None),
                "load1": os.getloadavg()[0],
                "p": rows,
                "new": new,
            }
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            with contextlib.suppress(ValueError):
                time.sleep(max(0.0, every - (time.time() - tick)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.live.processes", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=int, required=True)
    parser.add_argument("--extra", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--every", type=float, default=1.0)
    args = parser.parse_args(argv)
    sample_forever(args.root, args.extra, args.out, args.every)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
