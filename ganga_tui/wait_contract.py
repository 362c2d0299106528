"""The headless wait contract: ``--until``, ``--fail-on`` and ``--timeout`` conditions over a session's jobs.

A condition is ``[all|any:]SELECTION:STATE``:

- SELECTION is ``all`` (every job), ``group:NAME`` or ``backend:NAME``;
- STATE is ``final`` (completed, failed, killed, ...) or one of Ganga's statuses (``failed``, ``completed``, ...);
- ``--until`` means every selected job is in STATE (``all:final``); ``--fail-on`` means any selected job is
  (``any:failed``). A leading ``all:``/``any:`` overrides that, e.g. ``--fail-on all:group:g1:failed``.

Conditions are checked from per-status counts, so checking after every event costs nothing.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from monitor_core import Event, JobStatus, StateFold

__all__ = ["Condition", "ConditionError", "Watch"]

Quantifier = Literal["all", "any"]


class ConditionError(ValueError):
    """A condition that cannot be read."""


@dataclass(frozen=True, slots=True)
class Condition:
    """Which jobs, in which state, and whether all or any of them must be."""

    quantifier: Quantifier
    scope: Literal["all", "group", "backend"]
    name: str
    state: str
    """``final`` or a :class:`JobStatus` value."""

    @classmethod
    def parse(cls, text: str, *, default: Quantifier) -> Condition:
        """Read ``[all|any:]SELECTION:STATE``.

        Raises:
            ConditionError: the text does not follow the grammar.
        """
        parts = text.split(":")
        quantifier: Quantifier = default
        if len(parts) >= 3 and parts[0] in ("all", "any") and parts[1] in ("all", "any", "group", "backend"):
            quantifier = "all" if parts[0] == "all" else "any"
            parts = parts[1:]
        if len(parts) == 2 and parts[0] in ("all", "any"):
            quantifier = "all" if parts[0] == "all" else "any"
            scope, name, state = "all", "", parts[1]
        elif len(parts) == 3 and parts[0] in ("group", "backend") and parts[1]:
            scope, name, state = parts[0], parts[1], parts[2]
        else:
            raise ConditionError(
                f"cannot read condition {text!r}: expected all:STATE, any:STATE, group:NAME:STATE or backend:NAME:STATE"
            )
        if state != "final" and state not in JobStatus._value2member_map_:
            raise ConditionError(f"unknown state {state!r} in {text!r}: use final or one of {', '.join(JobStatus)}")
        return cls(quantifier, scope, name, state)  # type: ignore[arg-type]

    def _matches(self, status: JobStatus) -> bool:
        return status.is_final if self.state == "final" else status.value == self.state

    def _counts(self, fold: StateFold) -> Counter[JobStatus]:
        if self.scope == "group":
            return fold.by_group.get(self.name, Counter())
        if self.scope == "backend":
            return fold.by_backend.get(self.name, Counter())
        return fold.counts

    def holds(self, fold: StateFold) -> bool:
        """Whether the condition holds for the jobs the fold knows."""
        counts = self._counts(fold)
        present = [status for status, n in counts.items() if n > 0]
        if self.quantifier == "any":
            return any(self._matches(status) for status in present)
        if not present:
            # Every job of an empty session is final, once the session itself says it has none (a viewer
            # of a broker sees an empty state before the session publishes); an unknown group or
            # backend has not appeared yet.
            heartbeat = fold.heartbeat
            said_empty = fold.ended is not None or (heartbeat is not None and heartbeat.jobs_total == 0)
            return self.scope == "all" and said_empty
        return all(self._matches(status) for status in present)

    def __str__(self) -> str:
        selection = "all" if self.scope == "all" else f"{self.scope}:{self.name}"
        return f"{self.quantifier}:{selection}:{self.state}"


class Watch:
    """Decides, from the one fold, when the wait is over.

    Args:
        until: the condition to wait for, or ``None`` to wait until stopped.
        fail_on: conditions that end the wait as a failure.
        fold: the fold the runner keeps (a new one when ``None``).
    """

    def __init__(self, until: Condition | None, fail_on: list[Condition], fold: StateFold | None = None) -> None:
        self.fold = fold if fold is not None else StateFold()
        self.until = until
        self.fail_on = fail_on
        self.decided = asyncio.Event()
        """Set once ``until`` held or a ``fail_on`` condition did."""
        self.failed: Condition | None = None
        """The ``fail_on`` condition that held, if one did."""

    def apply(self, event: Event) -> None:
        """Fold one event in and check the conditions."""
        self.fold.apply(event)
        self.check()

    def check(self) -> None:
        """Check the conditions against what the fold holds now."""
        if self.decided.is_set():
            return
        for condition in self.fail_on:
            if condition.holds(self.fold):
                self.failed = condition
                self.decided.set()
                return
        if self.until is not None and self.until.holds(self.fold):
            self.decided.set()
