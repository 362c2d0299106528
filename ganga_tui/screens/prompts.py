"""Small questions: a backend's new poll interval."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.validation import ValidationResult, Validator
from textual.widgets import Input, Label

__all__ = ["IntervalPrompt", "parse_seconds"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_seconds(text: str) -> float | None:
    """``30``, ``30s``, ``1.5m``, ``500ms`` as seconds; ``None`` unless a positive duration."""
    text = text.strip().lower()
    scale = 1.0
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            text, scale = text[: -len(suffix)], _UNITS[suffix]
            break
    try:
        value = float(text) * scale
    except ValueError:
        return None
    return value if value > 0 and value != float("inf") else None


class _Duration(Validator):
    def validate(self, value: str) -> ValidationResult:
        return self.success() if parse_seconds(value) is not None else self.failure("a positive duration, e.g. 30s")


class IntervalPrompt(ModalScreen[float | None]):
    """Ask for a backend's target poll interval; dismisses with seconds, or ``None`` on escape."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    DEFAULT_CSS = """
    IntervalPrompt { align: center middle; }
    IntervalPrompt > Vertical {
        width: 60; max-width: 100%; height: auto; border: round $primary; background: $surface; padding: 0 1;
    }
    """

    def __init__(self, backend: str, current: float) -> None:
        super().__init__()
        self.backend = backend
        """Whose interval is asked for."""
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"poll interval of {self.backend} (now {self.current:g}s); e.g. 30s, 2m")
            yield Input(value=f"{self.current:g}", validators=[_Duration()], id="interval")

    @on(Input.Submitted, "#interval")
    def submit(self, event: Input.Submitted) -> None:
        seconds = parse_seconds(event.value)
        if seconds is not None:
            self.dismiss(seconds)

    def action_cancel(self) -> None:
        self.dismiss(None)
