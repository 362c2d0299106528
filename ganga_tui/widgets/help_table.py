"""Every key of the app, in sections, as one table (built from the bindings themselves)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.table import Table
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import Static

__all__ = ["KeyHelp", "describe_keys"]

_KEY_NAMES = {
    "question_mark": "?",
    "colon": ":",
    "slash": "/",
    "space": "space",
    "escape": "esc",
    "enter": "enter",
    "pageup": "PgUp",
    "pagedown": "PgDn",
}


def describe_keys(keys: str) -> str:
    """Binding keys as a person types them: ``question_mark`` becomes ``?``, ``ctrl+f`` stays."""
    return " / ".join(_KEY_NAMES.get(key, key) for key in keys.split(","))


def _bindings(items: Iterable[BindingType]) -> list[Binding]:
    result = []
    for item in items:
        if isinstance(item, Binding):
            result.append(item)
        elif len(item) >= 3:
            result.append(Binding(item[0], item[1], item[2]))
        else:
            result.append(Binding(item[0], item[1], item[1]))
    return result


class KeyHelp(Static):
    """A table of keys grouped into sections, e.g. ("Everywhere", App.BINDINGS)."""

    DEFAULT_CSS = """
    KeyHelp { height: auto; }
    """

    def __init__(self, sections: Sequence[tuple[str, Iterable[BindingType]]], *, id: str | None = None) -> None:
        self.sections = [(title, _bindings(items)) for title, items in sections]
        """The sections shown, with their bindings."""
        super().__init__(self._table(), id=id)

    def _table(self) -> Table:
        table = Table.grid(padding=(0, 2))
        table.add_column(justify="right", style="bold", no_wrap=True)
        table.add_column()
        for title, bindings in self.sections:
            table.add_row("", Text(title, style="bold underline"))
            for binding in bindings:
                table.add_row(describe_keys(binding.key), binding.description or binding.action)
            table.add_row("", "")
        return table

    def keys(self) -> list[str]:
        """Every key listed, as shown."""
        return [describe_keys(b.key) for _, bindings in self.sections for b in bindings]
