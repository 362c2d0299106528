"""The session's own account of the run: found on its socket, heard through a headless viewer.

When the demo serves its bus on a Unix socket (the session in its own process), the
benchmark attaches the product's headless JSON viewer, ``python -m ganga_tui --attach
SOCKET --headless --json --events ...``, with its output going to a file, and reads that file
after the run: per-backend status and results lag from ``LagSampled``, jobs per state and the
loop's lateness from ``Heartbeat``, rejections, faults, operation outcomes.

It asks for those kinds alone. An instrument sent every event (350,000 in a 100,000-job run)
took a third of a core in the completion burst, and the session's loop a second pump, out of
the two cores it measures. When the demo serves no socket (the session inside the
TUI's process) there is nothing to attach to and these figures come from the screen.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from monitor_core.transports.unix_socket import discover_sessions

__all__ = ["FEED_EVENTS", "FeedSummary", "JsonViewer", "find_socket", "read_feed"]

_CHANGE = re.compile(r'"old":"(\w+)","new":"(\w+)"')
_AT = re.compile(r'"at":([0-9.]+)')
_ADDED_STATUS = re.compile(r'"status":"(\w+)"')
_LOOP_LAG = re.compile(r'"loop_lag":([0-9.eE+-]+)')
_LOOP_BINS = re.compile(r'"loop_lag_bins":\[([0-9,]*)\]')
FEED_EVENTS = ("Heartbeat", "LagSampled", "UpdateRejected", "OpFinished", "LocalFault", "SessionEnded")
"""What the benchmark reads of the session's events."""


def find_socket(runtime: Path, state_dir: Path, pids: set[int]) -> tuple[Path, int | None] | None:
    """The socket a demo of this run serves, and the pid that serves it, if any yet.

    Looks in the run's own runtime directory (``$XDG_RUNTIME_DIR/ganga-monitor`` of the run,
    so other sessions on the machine never match) and in the demo's state directory.
    """
    for found in discover_sessions(runtime / "ganga-monitor", clean_stale=False):
        if found.pid is None or found.pid in pids or not pids:
            return found.path, found.pid
    # Not recursive: the state directory holds every job's outputs.
    with contextlib.suppress(OSError):
        for path in sorted(state_dir.glob("*.sock")):
            if path.is_socket():
                return path, None
    return None


class JsonViewer:
    """The product's headless JSON viewer attached to a socket, writing to a file."""

    def __init__(self, socket: Path, out: Path, *, env: dict[str, str]) -> None:
        self.out = out
        self._sink: IO[bytes] = out.open("wb")
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "ganga_tui", "--attach", str(socket), "--headless", "--json"),
                *("--events", ",".join(FEED_EVENTS)),
            ],
            stdout=self._sink,
            stderr=subprocess.PIPE,
            env=env,
        )

    def stop(self, timeout: float = 20.0) -> str:
        """Wait for the viewer to end with its session (terminate it after ``timeout``); its stderr."""
        try:
            _, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                _, err = self.process.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                _, err = self.process.communicate()
        self._sink.close()
        return (err or b"").decode("utf-8", "replace")


@dataclass(slots=True)
class FeedSummary:
    """What the session said during the run."""

    lag: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    """Per backend: (time, status lag, results lag) of every ``LagSampled``."""
    backend_last: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per backend: the last record (poll interval, call latency, totals)."""
    latencies: dict[str, list[float]] = field(default_factory=dict)
    """Per backend: the call latency of every sample that had one."""
    loop_lag: list[tuple[float, float, tuple[int, ...]]] = field(default_factory=list)
    """Per heartbeat: (time, the longest the session's loop ran late since the one before, the
    probe's wake-ups per bin of lateness meanwhile)."""
    counts: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    """Jobs per state over time (one point per half second of events)."""
    rejections: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    faults: int = 0
    events: int = 0
    ended: str | None = None
    ended_at: float | None = None
    summary: dict[str, Any] | None = None


def read_feed(path: Path, *, every: float = 0.5) -> FeedSummary:
    """Read a JSON viewer's output; cheap per line, since a 100,000-job run has millions of them."""
    feed = FeedSummary()
    counts: Counter[str] = Counter()
    last_point = 0.0
    with path.open("rb") as lines:
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            head = line[:48]
            feed.events += 1
            at_match = _AT.search(line, 0, 200)
            at = float(at_match.group(1)) if at_match else last_point
            if '"JobChanged"' in head:
                change = _CHANGE.search(line)
                if change is not None:
                    counts[change.group(1)] -= 1
                    counts[change.group(2)] += 1
            elif '"JobAdded"' in head:
                added = _ADDED_STATUS.search(line)
                if added is not None:
                    counts[added.group(1)] += 1
            elif '"LagSampled"' in head:
                record = json.loads(line)["data"]["backend"]
                _lag_sample(feed, at, record)
            elif '"Snapshot"' in head:
                data = json.loads(line)["data"]
                counts = Counter(job["status"] for job in data["jobs"])
                for record in data["backends"]:
                    _lag_sample(feed, at, record)
            elif '"Heartbeat"' in head:
                by_status = json.loads(line)["data"].get("jobs_by_status")
                if by_status:
                    counts = Counter(by_status)
                late = _LOOP_LAG.search(line)
                bins = _LOOP_BINS.search(line)
                if late is not None and bins is not None:
                    wakeups = tuple(int(n) for n in bins.group(1).split(",") if n)
                    feed.loop_lag.append((at, float(late.group(1)), wakeups))
            elif '"UpdateRejected"' in head:
                feed.rejections[json.loads(line)["data"]["category"]] += 1
            elif '"OpFinished"' in head:
                outcome = re.search(r'"outcome":"(\w+)"', line)
                kind = re.search(r'"kind":"(\w+)"', line)
                if outcome is not None and kind is not None:
                    feed.outcomes[f"{kind.group(1)} {outcome.group(1)}"] += 1
            elif '"LocalFault"' in head:
                feed.faults += 1
            elif '"SessionEnded"' in head:
                data = json.loads(line)["data"]
                feed.ended, feed.ended_at = data.get("reason") or "ended", at
            elif '"Summary"' in head:
                feed.summary = json.loads(line)["data"]
            if at - last_point >= every:
                feed.counts.append((at, {name: count for name, count in counts.items() if count}))
                last_point = at
    feed.counts.append((last_point, {name: count for name, count in counts.items() if count}))
    return feed


def _lag_sample(feed: FeedSummary, at: float, record: dict[str, Any]) -> None:
    name = record["name"]
    feed.lag.setdefault(name, []).append((at, float(record["lag"]), float(record.get("results_lag") or 0.0)))
    feed.backend_last[name] = record
    if record.get("last_latency") is not None:
        feed.latencies.setdefault(name, []).append(float(record["last_latency"]))
