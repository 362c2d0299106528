"""What a captured ``ganga-monitor-tui`` screen shows, read from its plain text.

Only what the benchmark needs: which screen is up, the job table's visible ids, the
counts line (jobs per state, filter), the status bar (final/total, warnings, rejections,
a "behind" mark) and each backend's lag as displayed. Parsing is lenient: a line that
does not match is skipped, so a layout change shows up as a key that never "arrives",
not as a crash.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Screen", "parse_duration", "read_screen"]

_ROW = re.compile(r"^[^\d\s]{0,3}\s*(\d+) (\S+)\s+(\S+)\s+([a-z]+)\b")
"""A job row: its marks (warning, stale), id, name, backend and status."""
_HEADER = re.compile(r"\bid[▲▼]?\s+name\b")
_COUNTS_ALL = re.compile(r"^\s*(\d+) jobs │")
_COUNTS_FILTERED = re.compile(r"^\s*(\d+) of (\d+) shown │ filter (.*?) │")
_STATE_COUNT = re.compile(r"\b([a-z]+) (\d+)\b")
_FINAL = re.compile(r"│ (\d+)/(\d+) final")
_WARNINGS = re.compile(r"│ (\d+) warnings")
_REJECTED = re.compile(r"│ (\d+) rejected")
_BEHIND = re.compile(r"behind by (\d+)")
_DETAIL_TITLE = re.compile(r"^\s*job (\S+)\s*$")
_BACKEND_ROW = re.compile(r"^│ (\S+)\s+(\d+)\s+(\d+)/(\d+)\s+(\d+)\s+(\S+)\s")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s)$|^(\d+)m(\d\d)$|^(\d+)h(\d\d)$")
_STATES = frozenset(
    {"new", "submitting", "submitted", "running", "completing", "completed", "failed", "killed", "unknown"}
)


def parse_duration(text: str) -> float | None:
    """Seconds from the TUI's short forms (``0.3s``, ``12s``, ``4m05``, ``2h10``); ``None`` for ``-``."""
    match = _DURATION.match(text)
    if match is None:
        return None
    number, unit, minutes, seconds, hours, hour_minutes = match.groups()
    if number is not None:
        return float(number) / (1000.0 if unit == "ms" else 1.0)
    if minutes is not None:
        return int(minutes) * 60.0 + int(seconds)
    return int(hours) * 3600.0 + int(hour_minutes) * 60.0


@dataclass(slots=True)
class Screen:
    """One capture of the pane, read."""

    lines: list[str]
    dashboard: bool = False
    """The main screen (status bar and job table), not a pushed one."""
    detail_of: str | None = None
    """The job whose detail screen is up."""
    row_ids: list[int] = field(default_factory=list)
    """Job ids of the table's visible rows, top to bottom."""
    row_names: list[str] = field(default_factory=list)
    total: int | None = None
    """Jobs in the session, from the counts line."""
    shown: int | None = None
    """Rows the filter lets through (``total`` when no filter)."""
    filter_text: str | None = None
    filter_open: bool = False
    """The filter box is on screen."""
    counts: dict[str, int] = field(default_factory=dict)
    final: int | None = None
    warnings: int = 0
    rejected: int = 0
    behind: int | None = None
    lag: dict[str, float] = field(default_factory=dict)
    """Each backend's status lag as displayed."""


def read_screen(text: str) -> Screen:
    """Read one ``capture-pane -p`` text."""
    lines = text.splitlines()
    screen = Screen(lines)
    if not lines:
        return screen
    top = lines[0]
    title = _DETAIL_TITLE.match(top)
    if title is not None:
        screen.detail_of = title.group(1)
    screen.dashboard = "ganga-monitor" in top and title is None
    for source in (_FINAL, _WARNINGS, _REJECTED):
        match = source.search(top)
        if match is None:
            continue
        if source is _FINAL:
            screen.final, screen.total = int(match.group(1)), int(match.group(2))
        elif source is _WARNINGS:
            screen.warnings = int(match.group(1))
        else:
            screen.rejected = int(match.group(1))
    behind = _BEHIND.search(text)
    if behind is not None:
        screen.behind = int(behind.group(1))
    if not screen.dashboard:
        return screen
    in_table = False
    for line in lines[1:]:
        if in_table:
            row = _ROW.match(line)
            if row is None:
                in_table = False
                continue
            screen.row_ids.append(int(row.group(1)))
            screen.row_names.append(row.group(2))
            continue
        if _HEADER.search(line):
            in_table = True
            continue
        backend = _BACKEND_ROW.match(line)
        if backend is not None:
            lag = parse_duration(backend.group(6))
            if lag is not None:
                screen.lag[backend.group(1)] = lag
            continue
        if line.lstrip().startswith("filter: ") or (screen.filter_text and line.strip().startswith(screen.filter_text)):
            screen.filter_open = True
            continue
        everything = _COUNTS_ALL.match(line)
        filtered = _COUNTS_FILTERED.match(line)
        if everything is None and filtered is None:
            continue
        if filtered is not None:
            screen.shown, screen.total = int(filtered.group(1)), int(filtered.group(2))
            screen.filter_text = filtered.group(3).strip()
            rest = line[filtered.end() :]
        else:
            assert everything is not None
            screen.total = int(everything.group(1))
            screen.shown = screen.total
            rest = line[everything.end() :]
        rest = rest.split("│", 1)[0]
        screen.counts = {name: int(count) for name, count in _STATE_COUNT.findall(rest) if name in _STATES}
    return screen
