"""The help screen: every key, listed from the bindings themselves so it never drifts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ..widgets.help_table import KeyHelp

__all__ = ["HelpScreen"]

_FILTER_HELP = (
    "Filter words (/): s:running,failed  b:dirac-sim  g:dirac-sim-batch003  is:warn  and free text "
    "matched against id, name, group and detail. Marks in the first column: ? unconfirmed, "
    "! stuck, ≠ backend done but session not."
)


class HelpScreen(ModalScreen[None]):
    """Keys by context, and the filter syntax."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "app.pop_screen", "Close help")]

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90; max-width: 100%; height: auto; max-height: 100%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    HelpScreen Static#filter-help { margin: 1 0 0 0; color: $text-muted; }
    """

    def __init__(self, sections: Sequence[tuple[str, Iterable[BindingType]]]) -> None:
        super().__init__()
        self.sections = sections
        """(title, bindings) for each context."""

    def compose(self) -> ComposeResult:
        with VerticalScroll() as scroll:
            scroll.border_title = "keys"
            scroll.border_subtitle = "esc closes"
            yield KeyHelp(self.sections, id="keys")
            yield Static(_FILTER_HELP, id="filter-help")
