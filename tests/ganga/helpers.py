"""Reading what a viewer recorded over the socket."""

from __future__ import annotations

from typing import Any

from monitor_core import Event, SessionEnded, Snapshot
from monitor_core.transports import StateFold


def fold(events: list[Event | dict[str, Any]], upto_session: int = 1) -> tuple[StateFold, list[SessionEnded]]:
    """The state a viewer ends with after the first ``upto_session`` sessions, and how those sessions ended."""
    state = StateFold()
    ended: list[SessionEnded] = []
    for event in events:
        if isinstance(event, dict):
            continue
        if isinstance(event, Snapshot) and ended and len(ended) >= upto_session:
            break
        state.apply(event)
        if isinstance(event, SessionEnded):
            ended.append(event)
            if len(ended) >= upto_session:
                break
    return state, ended


def of_type(events: list[Event | dict[str, Any]], kind: type[Any]) -> list[Any]:
    return [event for event in events if isinstance(event, kind)]
