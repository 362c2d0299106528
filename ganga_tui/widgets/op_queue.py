"""The monitoring operation queue: queued and in-flight operations, oldest first; finished ones fade."""

from __future__ import annotations

from typing import Final

from rich.text import Text
from textual.widgets import DataTable

from ..job_store import JobStore, OpView
from ._format import duration

__all__ = ["OpQueue"]

_SHOWN: Final = 80
"""Rows kept in the table; the rest are counted in the subtitle (a DataTable stays cheap this small)."""
_MIN_GAP: Final = 0.25
"""Seconds between repaints when no operation changed (ages and fading only)."""
_COLUMNS: Final = (
    ("kind", "kind"),
    ("backend", "backend"),
    ("jobs", "jobs"),
    ("age", "age"),
    ("try", "attempt"),
    ("state", "state"),
)
_STATE_WORDS: Final = {"in_flight": "calling", "retrying": "retry"}


def _state_style(view: OpView, fade: float) -> str:
    if view.finished:
        base = "red" if view.state != "done" else ""
        return f"{base} dim" if fade < 0.5 else f"{base} dim italic"
    if view.state == "in_flight":
        return "bold"
    if view.state == "retrying":
        return "yellow"
    return ""


class OpQueue(DataTable[Text | str | int]):
    """Operations as a small table, diffed on each refresh: stale rows go, changed cells update, new rows are added."""

    DEFAULT_CSS = """
    OpQueue { height: 1fr; }
    """

    def __init__(self, store: JobStore, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False, show_cursor=False, cell_padding=1)
        self.store = store
        self._versions: dict[int, tuple[int, str]] = {}
        self._order: list[int] = []
        self._generation = -1
        self._painted_at = float("-inf")

    def on_mount(self) -> None:
        for label, key in _COLUMNS:
            self.add_column(label, key=key)

    def _cells(self, view: OpView, now: float) -> dict[str, Text]:
        style = _state_style(view, self.store.fade(view, now))
        since = view.started_at if view.state == "in_flight" and view.started_at else view.enqueued_at
        end = view.finished_at if view.finished_at is not None else now
        state = _STATE_WORDS.get(view.state, view.state)
        if view.finished and view.latency is not None:
            state = f"{state} {duration(view.latency)}"
        return {
            "kind": Text(view.kind.replace("fetch_output", "fetch"), style=style),
            "backend": Text(view.backend, style=style),
            "jobs": Text(str(len(view.job_ids)), style=style, justify="right"),
            "age": Text(duration(end - since), style=style, justify="right"),
            "attempt": Text(str(view.attempt), style=style, justify="right"),
            "state": Text(state, style=style),
        }

    def refresh_from_store(self, now: float) -> None:
        """Bring the rows in line with the store's operations: live ones oldest first, then the fading."""
        store = self.store
        # Ages move by the tenth of a second, fading by the half second: a repaint at most every
        # _MIN_GAP, or at once when operations came, went or moved.
        if store.ops_generation == self._generation and now - self._painted_at < _MIN_GAP:
            return
        self._generation = store.ops_generation
        self._painted_at = now
        shown = store.op_view.shown(_SHOWN)
        order = [view.op_id for view in shown]
        wanted = set(order)
        kept = [op_id for op_id in self._order if op_id in wanted]
        if kept != order[: len(kept)]:
            # Something moved (an operation finished); 80 rows rebuild in well under a frame.
            self.clear()
            self._versions.clear()
            self._order = []
        for op_id in [op_id for op_id in self._versions if op_id not in wanted]:
            self.remove_row(str(op_id))
            del self._versions[op_id]
        for view in shown:
            cells = self._cells(view, now)
            # The age column moves every refresh; only rewrite a row whose text changed.
            signature = (view.version, cells["age"].plain + str(cells["state"].style))
            previous = self._versions.get(view.op_id)
            if previous is None:
                self.add_row(*cells.values(), key=str(view.op_id))
            elif previous != signature:
                for key, value in cells.items():
                    self.update_cell(str(view.op_id), key, value)
            self._versions[view.op_id] = signature
        self._order = order
        states = store.op_view.live_states
        total = len(store.ops)
        more = f", {total - len(shown)} more" if total > len(shown) else ""
        title = f"operations: {states['in_flight']} in flight, {states['queued']} queued{more}"
        if title != self.border_title:
            self.border_title = title
