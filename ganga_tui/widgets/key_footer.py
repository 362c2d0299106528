"""The footer of keys, rebuilt only when the keys it shows change."""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer, Input

__all__ = ["KeyFooter"]


class KeyFooter(Footer):
    """Textual's footer, without rebuilding the same keys.

    The footer rebuilds its keys (a dozen widgets mounted and styled) whenever the screen's
    bindings may have changed: on every focus change, so on each ``/`` and Esc of the filter.
    Most of those leave the shown keys as they were; a key waits behind none of that work.
    While a text box has focus the keys of the screen stay shown (typing is what the box
    takes, as it takes ``q``), so opening and closing the filter rebuild nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self._shown: tuple[tuple[str, str, bool], ...] | None = None

    def bindings_changed(self, screen: Screen[object]) -> None:
        if self.is_attached and screen is self.screen and screen.app.app_focus:
            if isinstance(screen.focused, Input) and self._shown is not None:
                return
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
