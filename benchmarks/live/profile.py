"""Where a process of the run spends its time, window by window, with py-spy.

``py-spy record --format raw`` runs back to back in windows of a few seconds on one
process; after the run each window is put in the phase its middle falls in, and the
collapsed stacks of a phase give each function's share of the samples: *own* (the
function itself was running) and *total* (it was on the stack). py-spy samples without
stopping the process (``--nonblocking``), so the profiled run slows down little, but it
is still a separate run from the measured one.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PYSPY_HINT", "Profiler", "Window", "top_functions"]

PYSPY_HINT = "install py-spy first: `pip install py-spy`"


@dataclass(slots=True)
class Window:
    """One py-spy recording."""

    started: float
    ended: float
    path: Path
    samples: int = 0
    stacks: Counter[tuple[str, ...]] = field(default_factory=Counter)


class Profiler:
    """Records a process in consecutive windows until stopped or the process ends.

    Raises:
        FileNotFoundError: py-spy is not installed (the message says how to install it).
    """

    def __init__(self, pid: int, directory: Path, *, name: str, window: float = 8.0, rate: int = 67) -> None:
        found = shutil.which("py-spy")
        if found is None:
            raise FileNotFoundError(f"py-spy not found on PATH; {PYSPY_HINT}")
        self.binary = found
        self.pid = pid
        self.directory = directory
        self.name = name
        self.window = window
        self.rate = rate
        self.windows: list[Window] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"py-spy[{name}]", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.window + 10)
        for window in self.windows:
            _read_raw(window)

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set():
            path = self.directory / f"{self.name}-{index:03d}.txt"
            started = time.time()
            completed = subprocess.run(
                [
                    self.binary,
                    "record",
                    "--pid",
                    str(self.pid),
                    "--duration",
                    str(int(self.window)),
                    "--rate",
                    str(self.rate),
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--output",
                    str(path),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            ended = time.time()
            if completed.returncode != 0 or not path.exists():
                self.errors.append(completed.stderr.strip()[-300:])
                break
            self.windows.append(Window(started, ended, path))
            index += 1


def _read_raw(window: Window) -> None:
    try:
        text = window.path.read_text()
    except OSError:
        return
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = tuple(stack.split(";"))
        window.stacks[frames] += int(count)
        window.samples += int(count)


def _short(frame: str) -> str:
    # py-spy writes "function (path/to/module.py:line)"; keep the function and the module's last parts.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, _line = where.rpartition(":")
    parts = Path(path).parts
    tail = "/".join(parts[-2:]) if parts else path
    return f"{name} ({tail})"


_PROJECT = ("ganga_tui/", "monitor_core/")
_ENTRY = ("main (ganga_tui/__main__.py)", "run_app (ganga_tui/app.py)", "main (monitor_core/sim/cli.py)")


def _package(name: str) -> str:
    """``textual`` of ``Strip.__init__ (textual/strip.py)``, ``selectors`` of ``... (selectors.py)``."""
    where = name.rpartition(" (")[2].rstrip(")")
    head = where.split("/", 1)[0]
    return head.removesuffix(".py")


def _is_project(frame: str) -> bool:
    return any(part in frame for part in _PROJECT)


def top_functions(windows: list[Window], *, limit: int = 12, rate: int = 67) -> dict[str, object]:
    """The functions with the largest shares of these windows' samples.

    - ``own``: the function running itself (the innermost frame), any code;
    - ``project``: the innermost frame of this project on the stack, so library time (Textual,
      Rich, asyncio) is charged to the project code that called it;
    - ``total``: project functions anywhere on the stack (their callees included).

    Returns:
        ``{"samples", "seconds", "busy", "own", "project", "total"}``, the lists as
        ``[[function, share of samples], ...]``; ``busy`` is the samples over what a process
        busy all the time would give.
    """
    own: Counter[str] = Counter()
    project: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for window in windows:
        for frames, count in window.stacks.items():
            samples += count
            kept = [frame for frame in frames if " (" in frame and not frame.startswith("process ")]
            names = [_short(frame) for frame in kept]
            if names:
                own[names[-1]] += count
            ours = [name for name, frame in zip(names, kept, strict=True) if _is_project(frame) and name not in _ENTRY]
            project[ours[-1] if ours else f"(no project frame: {_package(names[-1]) if names else '?'})"] += count
            for name in set(ours):
                total[name] += count
    seconds = sum(window.ended - window.started for window in windows)

    def shares(counter: Counter[str]) -> list[list[object]]:
        return [[name, round(count / samples, 4)] for name, count in counter.most_common(limit)] if samples else []

    return {
        "samples": samples,
        "seconds": round(seconds, 1),
        "busy": round(samples / (rate * seconds), 3) if seconds else None,
        "own": shares(own),
        "project": shares(project),
        "total": shares(total),
    }
