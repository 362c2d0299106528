"""Jobs that need a look, and why: the list behind the warnings view."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from textual.widgets import DataTable

from ..job_store import JobStore, WarningKind
from ._format import age

__all__ = ["WarningsTable"]

_SHOWN: Final = 500


class WarningsTable(DataTable[str]):
    """One row per warned job (id, name, backend, status, since, why), diffed on refresh."""

    def __init__(self, store: JobStore, clock: Callable[[], float], *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.store = store
        self.clock = clock
        self._shown: dict[str, int] = {}

    def on_mount(self) -> None:
        for label, key in (
            ("!", "marks"),
            ("id", "id"),
            ("name", "name"),
            ("backend", "backend"),
            ("status", "status"),
            ("in status", "since"),
            ("why", "why"),
        ):
            self.add_column(label, key=key)
        self.refresh_from_store()

    def refresh_from_store(self) -> None:
        """Bring the rows in line with the store's warned jobs."""
        now = self.clock()
        # By id, so the list reads the same however the scan happened to find them.
        ordered = sorted(self.store.warned.values(), key=lambda row: row.id_key)[:_SHOWN]
        warned = {row.job_id: row for row in ordered}
        for job_id in [job_id for job_id in self._shown if job_id not in warned]:
            self.remove_row(job_id)
            del self._shown[job_id]
        for job_id, row in warned.items():
            cells = {
                "marks": "".join(sorted(w.mark for w in row.warnings)),
                "id": row.job_id,
                "name": row.name,
                "backend": row.backend,
                "status": row.status.value,
                "since": age(now, row.status_since),
                "why": "; ".join(w.explanation for w in WarningKind if w in row.warnings),
            }
            if job_id not in self._shown:
                self.add_row(*cells.values(), key=job_id)
            elif self._shown[job_id] != row.version:
                for key, value in cells.items():
                    self.update_cell(job_id, key, value)
            else:
                self.update_cell(job_id, "since", cells["since"])
            self._shown[job_id] = row.version
        self.border_title = f"{len(self.store.warned)} jobs with warnings"
