"""Apps for snapshot tests: the fixed session at a frozen clock, never ticking on its own."""

from __future__ import annotations

from ganga_tui.app import GangaMonitorApp

from .fixed_data import FixedSource, frozen_clock, session_events


def fixed_app() -> GangaMonitorApp:
    """The dashboard over the fixed session."""
    # A tick of an hour: every repaint in a snapshot test is one the test asked for.
    return GangaMonitorApp(FixedSource(session_events()), clock=frozen_clock, tick=3600)
