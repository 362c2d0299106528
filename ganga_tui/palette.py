"""The command palette's monitor commands: per-backend actions, the highlighted job, the view."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from .app import GangaMonitorApp

__all__ = ["MonitorCommands"]


class MonitorCommands(Provider):
    """Refresh a job, pause/resume a backend, change its interval, filter, freeze the view."""

    @property
    def monitor(self) -> GangaMonitorApp:
        """The app, with its store."""
        return self.app  # type: ignore[return-value]

    def _commands(self) -> list[tuple[str, Callable[[], object], str]]:
        app = self.monitor
        store = app.store
        commands: list[tuple[str, Callable[[], object], str]] = [
            ("Refresh highlighted job now", app.action_refresh_job, "poll it ahead of the queue"),
            ("Freeze / unfreeze the view", app.action_toggle_view_pause, "events still arrive meanwhile"),
            ("Toggle notifications", app.action_toggle_notifications, "bell and desktop notification"),
            ("Show warnings", app.action_warnings, "jobs that need a look"),
            ("Show only jobs with warnings", partial(app.apply_filter, "is:warn"), "filter the table"),
            ("Clear filter", app.action_clear_filter, "show every job"),
            ("Toggle side panel", app.action_toggle_side, "groups and operation queue"),
            ("Help: every key", app.action_help, "the help screen"),
        ]
        for name, record in sorted(store.backends.items()):
            verb = "Resume" if record.paused else "Pause"
            commands.append(
                (f"{verb} backend {name}", partial(app.action_toggle_backend_pause, name), "stop or restart its calls")
            )
            commands.append(
                (
                    f"Set poll interval of {name}",
                    partial(app.action_set_interval, name),
                    f"now {record.poll_interval:g}s",
                )
            )
            commands.append((f"Show only backend {name}", partial(app.apply_filter, f"b:{name}"), "filter the table"))
        for status in ("running", "submitted", "completing", "completed", "failed"):
            commands.append((f"Show only {status} jobs", partial(app.apply_filter, f"s:{status}"), "filter the table"))
        return commands

    async def discover(self) -> Hits:
        for name, callback, help_text in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
