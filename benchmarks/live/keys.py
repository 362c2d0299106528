"""The keys the benchmark types, and what each one's arrival on screen looks like.

One cycle is what a user does to look around: jump to the last job and back to the
first, filter by a group and clear the filter, open a job's detail and leave it. Each
step says when its result is on screen, read from :class:`~.screen.Screen`; a step whose
result already shows when it is sent measures nothing and is counted as such.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .screen import Screen

__all__ = ["CYCLE", "FILTER_WORD", "KeyStep", "at_rest"]

FILTER_WORD = "batch001"
"""Typed into the filter: a workload group of every backend, so the table narrows at any size."""


@dataclass(frozen=True, slots=True)
class KeyStep:
    """A key (or text) to type and the sign that the app has shown its result."""

    name: str
    keys: tuple[str, ...]
    arrived: Callable[[Screen], bool]
    literal: bool = False
    timed: bool = True
    """Untimed steps have no visible result of their own (Enter in the filter box moves focus)."""


def at_rest(screen: Screen) -> bool:
    """The dashboard with no filter and no pushed screen: where every cycle starts."""
    return screen.dashboard and screen.filter_text is None and not screen.filter_open and bool(screen.row_ids)


def _at_end(screen: Screen) -> bool:
    return at_rest(screen) and screen.total is not None and screen.row_ids[-1] == screen.total


def _at_home(screen: Screen) -> bool:
    return at_rest(screen) and screen.row_ids[0] == 1


def _filter_open(screen: Screen) -> bool:
    return screen.dashboard and screen.filter_open


def _narrowed(screen: Screen) -> bool:
    return (
        screen.dashboard
        and screen.filter_text == FILTER_WORD
        and screen.shown is not None
        and screen.total is not None
        and screen.shown < screen.total
        and bool(screen.row_names)
        and all(FILTER_WORD in name for name in screen.row_names)
    )


def _detail_open(screen: Screen) -> bool:
    return screen.detail_of is not None


def _back(screen: Screen) -> bool:
    return screen.dashboard and screen.detail_of is None


CYCLE: tuple[KeyStep, ...] = (
    KeyStep("End", ("End",), _at_end),
    KeyStep("Home", ("Home",), _at_home),
    KeyStep("/", ("/",), _filter_open),
    KeyStep("filter text", (FILTER_WORD,), _narrowed, literal=True),
    KeyStep("Enter (filter)", ("Enter",), _narrowed, timed=False),
    KeyStep("Esc (filter)", ("Escape",), at_rest),
    KeyStep("Enter (detail)", ("Enter",), _detail_open),
    KeyStep("Esc (detail)", ("Escape",), _back),
)
