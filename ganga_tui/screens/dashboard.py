"""The screen the dashboard is composed on: Textual's own, less one full repaint per focus change."""

from __future__ import annotations

from textual.reactive import Reactive
from textual.screen import Screen
from textual.widget import Widget

__all__ = ["DashboardScreen"]


class DashboardScreen(Screen[object]):
    """The app's default screen.

    Textual's screen repaints itself whole when its focus moves: every ``/`` into the filter and
    every Enter out of it redrew all 200x50 cells (28 ms a frame at 10,000 jobs, then tens of
    kB through the terminal). What focus changes the look of is repainted anyway, by the
    styles of the widgets that gain and lose it (the box's background, the table's cursor).
    """

    focused: Reactive[Widget | None] = Reactive(None, repaint=False)
