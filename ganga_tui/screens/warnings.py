"""The warnings view: every job that needs a look, and why."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Static

from ..job_store import WarningKind
from ..widgets.key_footer import KeyFooter
from ..widgets.warnings_table import WarningsTable

if TYPE_CHECKING:
    from ..app import GangaMonitorApp

__all__ = ["WarningsScreen"]


class WarningsScreen(Screen[None]):
    """A table of warned jobs; enter opens one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,w", "app.pop_screen", "Back"),
    ]

    @property
    def monitor(self) -> GangaMonitorApp:
        """The app, with its store."""
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        store = self.monitor.store
        yield Static("warnings", classes="title-bar")
        legend = "   ".join(f"{kind.mark} {kind.explanation}" for kind in WarningKind)
        yield Static(
            f"{legend}  (k = {store.unconfirmed_factor:g}, stuck = {store.stuck_factor:g} x usual)", id="legend"
        )
        yield WarningsTable(store, self.monitor.clock, id="warnings")
        yield KeyFooter()

    def refresh_from_store(self) -> None:
        """Update the rows (called by the app on new events and every second)."""
        self.query_one(WarningsTable).refresh_from_store()

    @on(DataTable.RowSelected, "#warnings")
    def open_job(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.monitor.open_job(event.row_key.value)
