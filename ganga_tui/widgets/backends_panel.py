"""Per-backend health: load, calls in flight, queue, status lag and results lag with their history, fetches."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

from monitor_core import BackendRecord

from ..job_store import JobStore
from ._format import duration, show

__all__ = ["BackendRow", "BackendsPanel"]

_LEFT = "{name:<11.11} {active:>6} {flight:>5} {queued:>5} {lag:>6} {results:>7} "
_RIGHT = " {fetches:>9} {errors:>4} {breaker:<7.7} {load:>10}"


def _load(record: BackendRecord) -> str:
    limit = "-" if record.max_calls_per_minute is None else f"{record.max_calls_per_minute:.0f}"
    return f"{record.calls_per_minute:.0f}/{limit}"


class BackendRow(Horizontal):
    """One backend's line. Classes say its state: ``-lagging``, ``-breaker-open``, ``-paused``, ``-hot``."""

    def __init__(self, name: str) -> None:
        super().__init__(id=f"backend-{name}", classes="backend-row")
        self.backend = name
        """The backend this row shows."""
        self._left = Static(classes="backend--left", markup=False)
        self._sparkline = Sparkline([0.0, 0.0], summary_function=max, classes="backend--lag")
        self._results = Sparkline([0.0, 0.0], summary_function=max, classes="backend--results")
        self._right = Static(classes="backend--right", markup=False)

    def compose(self) -> ComposeResult:
        yield self._left
        yield self._sparkline
        yield self._results
        yield self._right

    def show(self, record: BackendRecord, history: list[float], results: list[float], *, lagging: bool) -> None:
        """Show a new health sample, and the status-lag and results-lag histories."""
        left = _LEFT.format(
            name=record.name,
            active=record.active_jobs,
            flight=f"{record.in_flight}/{record.concurrency_limit}",
            queued=record.queued_ops,
            lag=duration(record.lag),
            results=duration(record.results_lag),
        )
        breaker = "paused" if record.paused else record.breaker.replace("_", "-")
        right = _RIGHT.format(
            fetches=f"{record.fetches_in_flight}/{record.fetch_limit}+{record.fetches_queued}",
            errors=f"{record.error_rate:.0%}",
            breaker=breaker,
            load=_load(record),
        )
        show(self._left, left)
        show(self._right, right)
        # An all-zero history would draw as a full bar; keep an on-time backend's line flat.
        lag_data = [*history] if any(history) else [0.0, 0.0]
        results_data = [*results] if any(results) else [0.0, 0.0]
        # A reactive set repaints even when equal; the histories move once a sample.
        if self._sparkline.data != lag_data:
            self._sparkline.data = lag_data
        if self._results.data != results_data:
            self._results.data = results_data
        self.set_class(lagging, "-lagging")
        self.set_class(record.breaker != "closed", "-breaker-open")
        self.set_class(record.paused, "-paused")
        limit = record.max_calls_per_minute
        self.set_class(limit is not None and record.calls_per_minute > 0.8 * limit, "-hot")


class BackendsPanel(Vertical):
    """A header and one :class:`BackendRow` per backend, added and removed as backends come and go."""

    DEFAULT_CSS = """
    BackendsPanel { height: auto; }
    BackendsPanel > .backends--header { text-style: bold; }
    BackendsPanel > Horizontal { height: 1; }
    BackendsPanel .backend--left { width: 46; }
    BackendsPanel .backend--right { width: 34; }
    BackendsPanel Sparkline, BackendsPanel .backend--middle { width: 1fr; min-width: 4; margin: 0 1 0 0; }
    """

    def __init__(self, store: JobStore, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.store = store
        self._generation = -1

    def compose(self) -> ComposeResult:
        with Horizontal(classes="backends--header"):
            yield Static(
                _LEFT.format(
                    name="backend", active="active", flight="calls", queued="queue", lag="lag", results="results"
                ),
                classes="backend--left",
                markup=False,
            )
            yield Static("lag history", classes="backend--middle backend--lag")
            yield Static("results history", classes="backend--middle backend--results")
            yield Static(
                _RIGHT.format(fetches="fetches", errors="err", breaker="breaker", load="calls/min"),
                classes="backend--right",
                markup=False,
            )

    def refresh_from_store(self) -> None:
        """Diff the rows against the store: add new backends, drop gone ones, update the rest."""
        store = self.store
        if store.backends_generation == self._generation:
            return
        self._generation = store.backends_generation
        rows = {row.backend: row for row in self.query(BackendRow)}
        for name in rows.keys() - store.backends.keys():
            rows.pop(name).remove()
        for name, record in store.backends.items():
            row = rows.get(name)
            if row is None:
                row = BackendRow(name)
                self.mount(row)
            row.show(
                record,
                list(store.lag_history.get(name, ())),
                list(store.results_history.get(name, ())),
                lagging=store.is_lagging(name),
            )
        lagging = [name for name in store.backends if store.is_lagging(name)]
        faults = [f"{fault.what}: {fault.error}" for fault in store.faults]
        self.set_class(bool(lagging) or bool(faults), "-lagging")
        notes = (["lagging: " + ", ".join(lagging)] if lagging else []) + [f"local fault {f}" for f in faults]
        self.border_subtitle = " │ ".join(notes)
