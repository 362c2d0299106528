"""The footer of keys, rebuilt only when the keys it shows change."""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer

__all__ = ["KeyFooter"]


class KeyFooter(Footer):
    """Textual's footer, without rebuilding the same keys.

    The footer rebuilds its keys (a dozen widgets mounted and styled) whenever the screen's
    bindings may have changed: on every focus change, so on each ``/`` and Esc of the filter.
    Most of those leave the shown keys as they were; a key waits behind none of that work.
    """

    def __init__(self) -> None:
        super().__init__()
        self._shown: tuple[tuple[str, str, bool], ...] | None = None

    def bindings_changed(self, screen: Screen[object]) -> None:
        if self.is_attached and screen is self.screen and screen.app.app_focus:
            shown = tuple(
                (binding.key, binding.description, enabled)
                for _, binding, enabled, _ in screen.active_bindings.values()
                if binding.show
            )
            if shown == self._shown:
                self._bindings_ready = True
                return
            self._shown = shown
        super().bindings_changed(screen)
