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


def top_functions(windows: list[Window], *, limit: int = 12) -> dict[str, object]:
    """The functions with the largest shares of these windows' samples, own and total.

    Returns:
        ``{"samples", "seconds", "own": [[function, share], ...], "total": [[function, share], ...]}``
    """
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for window in windows:
        for frames, count in window.stacks.items():
            samples += count
            names = [_short(frame) for frame in frames if not frame.startswith("process ") and " (" in frame]
            if names:
                own[names[-1]] += count
            for name in set(names):
                total[name] += count
    seconds = sum(window.ended - window.started for window in windows)
    return {
        "samples": samples,
        "seconds": round(seconds, 1),
        "own": [[name, round(count / samples, 4)] for name, count in own.most_common(limit)] if samples else [],
        "total": [[name, round(count / samples, 4)] for name, count in total.most_common(limit * 3)] if samples else [],
    }
