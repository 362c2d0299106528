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
    takes, as it takes ``q``), so opening and closing the filter rebuild nothing. A footer out
    of sight keeps its keys too: opening and leaving a job's detail rebuild nothing either.
    """

    def __init__(self) -> None:
        super().__init__()
        self._shown: tuple[tuple[str, str, bool], ...] | None = None

    def bindings_changed(self, screen: Screen[object]) -> None:
        # As Textual's footer does, but the rebuild is decided when it would run, after the
        # refresh: a push or pop of a screen signals in between, with the bindings of a screen
        # on its way out (6 keys instead of 10), and rebuilding for those cost each Enter and
        # Esc of a job's detail 30 ms.
        self._bindings_ready = True
        if screen.app.app_focus and self.is_attached and screen is self.screen:
            self.call_after_refresh(self._rebuild_if_changed)

    async def _rebuild_if_changed(self) -> None:
        screen = self.screen
        if self._shown is not None and (_hidden(screen) or isinstance(screen.focused, Input)):
            # Out of sight under another screen (it is told again when it shows), or typing in a box.
            return
        shown = tuple(
            (binding.key, binding.description, enabled)
            for _, binding, enabled, _ in screen.active_bindings.values()
            if binding.show
        )
        if shown != self._shown:
            self._shown = shown
            await self.recompose()


def _hidden(screen: Screen[object]) -> bool:
    """Off the stack, or under an opaque screen.

    Not ``is_current``, which holds for the screen under the top one whatever covers it. A
    screen under a see-through one (the help) stays in sight, and its footer shows the keys that
    work while the one on top is open.
    """
    stack = screen.app.screen_stack
    return screen not in stack or any(above.styles.background.a == 1 for above in stack[stack.index(screen) + 1 :])
