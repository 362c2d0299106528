"""The ``/`` filter box: always in its place, so opening and closing it moves nothing."""

from __future__ import annotations

from typing import Final

from textual.geometry import Size
from textual.reactive import Reactive
from textual.widgets import Input

__all__ = ["FilterBox"]

IDLE_HINT: Final = "/ filter"
TYPING_HINT: Final = "filter: s:running b:local g:GROUP is:warn text"


class FilterBox(Input):
    """Textual's input, with a short hint at rest and the filter's words while it has focus.

    Shown or hidden, the box would change the layout, and a layout change redraws the whole
    screen (a full 200x50 frame for one key); a box that stays and only changes its hint
    repaints its own line.
    """

    virtual_size = Reactive(Size(0, 0))
    """Not a layout change: Textual's input sets its text's width here on every key typed, and
    the layout pass that followed (the whole screen's widgets arranged again) cost 6 ms a key
    at 10,000 jobs. The box's own size is fixed; the width only scrolls the text inside it."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(placeholder=IDLE_HINT, id=id)

    def on_focus(self) -> None:
        self.placeholder = TYPING_HINT

    def on_blur(self) -> None:
        self.placeholder = IDLE_HINT
