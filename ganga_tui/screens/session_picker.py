"""A picker among the sessions running on this machine, shown when there are several."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Label, OptionList
from textual.widgets.option_list import Option

from monitor_core.transports.unix_socket import DiscoveredSession

__all__ = ["SessionPicker", "pick_session"]


def _label(session: DiscoveredSession) -> str:
    started = (
        datetime.datetime.fromtimestamp(session.started_at).strftime("%Y-%m-%d %H:%M:%S") if session.started_at else "?"
    )
    detail = f" - {session.description}" if session.description else ""
    return f"{session.session}  (pid {session.pid or '?'}, since {started}){detail}"


class SessionPicker(Screen[Path | None]):
    """Lists running sessions; Enter attaches to the highlighted one, Escape gives up."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel"), Binding("q", "cancel", "Quit")]

    DEFAULT_CSS = """
    SessionPicker { align: center middle; }
    SessionPicker > Label { padding: 1 2; }
    SessionPicker > OptionList { width: 90%; height: auto; max-height: 80%; }
    """

    def __init__(self, sessions: list[DiscoveredSession]) -> None:
        super().__init__()
        self.sessions = sessions

    def compose(self) -> ComposeResult:
        yield Label(f"{len(self.sessions)} monitoring sessions are running; attach to which?")
        yield OptionList(*(Option(_label(item), id=str(item.path)) for item in self.sessions), id="sessions")
        yield Footer()

    @on(OptionList.OptionSelected, "#sessions")
    def chosen(self, event: OptionList.OptionSelected) -> None:
        assert event.option.id is not None
        self.dismiss(Path(event.option.id))

    def action_cancel(self) -> None:
        self.dismiss(None)


class _PickerApp(App[Path | None]):
    def __init__(self, sessions: list[DiscoveredSession]) -> None:
        super().__init__()
        self.sessions = sessions

    def on_mount(self) -> None:
        self.push_screen(SessionPicker(self.sessions), callback=self.exit)


def pick_session(sessions: list[DiscoveredSession]) -> Path | None:
    """Ask the user to choose a session; ``None`` when they give up."""
    return _PickerApp(sessions).run()
