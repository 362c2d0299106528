"""DiracX's job statuses: what each means to Ganga, and which moves DIRAC's state machine allows.

The graph is DIRAC's ``JobsStateMachine`` (DIRACCommon 9, used by DiracX 0.7), written out
here so the monitor can tell a job that moved on from an answer that went backwards. Between
two polls a job may pass through several statuses, so a move is believable when the new
status is *reachable* from the old one, not only one step away.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from .._model import JobStatus

__all__ = ["DIRACX_STATUS_MAPPING", "DIRACX_TRANSITIONS", "FINAL_DIRACX_STATUSES", "is_reachable"]

_S = JobStatus

DIRACX_STATUS_MAPPING: Final[Mapping[str, JobStatus]] = {
    # Waiting for a pilot, in DIRAC's order; ``Rescheduled`` goes back to the queue.
    "Submitting": _S.SUBMITTED,
    "Received": _S.SUBMITTED,
    "Checking": _S.SUBMITTED,
    "Scouting": _S.SUBMITTED,
    "Staging": _S.SUBMITTED,
    "Waiting": _S.SUBMITTED,
    "Matched": _S.SUBMITTED,
    "Rescheduled": _S.SUBMITTED,
    # On a worker node. ``Stalled`` is a running job whose pilot stopped reporting; it may
    # recover. ``Completing``/``Completed`` upload outputs: not finished yet (as GangaDirac).
    "Running": _S.RUNNING,
    "Stalled": _S.RUNNING,
    "Completing": _S.RUNNING,
    "Completed": _S.RUNNING,
    # Finished.
    "Done": _S.COMPLETED,
    "Failed": _S.FAILED,
    "Killed": _S.KILLED,
    "Deleted": _S.FAILED,
}
"""Every status DiracX 0.7's ``JobStatus`` has (plus DIRAC's ``Scouting``), mapped to Ganga's.
Anything else is an unknown status and refused."""

DIRACX_TRANSITIONS: Final[Mapping[str, frozenset[str]]] = {
    "Submitting": frozenset({"Received", "Checking", "Deleted", "Killed"}),
    "Received": frozenset({"Scouting", "Checking", "Staging", "Waiting", "Failed", "Deleted", "Killed"}),
    "Checking": frozenset({"Scouting", "Staging", "Waiting", "Rescheduled", "Failed", "Deleted", "Killed"}),
    "Scouting": frozenset({"Checking", "Failed", "Stalled", "Killed"}),
    "Staging": frozenset({"Checking", "Waiting", "Failed", "Killed"}),
    "Waiting": frozenset({"Matched", "Rescheduled", "Deleted", "Killed"}),
    "Matched": frozenset({"Running", "Failed", "Rescheduled", "Killed"}),
    "Rescheduled": frozenset({"Waiting", "Received", "Deleted", "Failed", "Killed"}),
    "Running": frozenset({"Stalled", "Done", "Failed", "Rescheduled", "Completing", "Killed", "Received"}),
    "Stalled": frozenset({"Running", "Failed", "Killed"}),
    "Completing": frozenset({"Done", "Failed", "Completed", "Stalled", "Killed"}),
    "Completed": frozenset({"Done", "Failed"}),
    "Done": frozenset({"Deleted"}),
    "Failed": frozenset({"Rescheduled", "Deleted"}),
    "Killed": frozenset({"Deleted"}),
    "Deleted": frozenset(),
}

FINAL_DIRACX_STATUSES: Final = frozenset({"Done", "Failed", "Killed", "Deleted"})


def _closure(graph: Mapping[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    reachable: dict[str, frozenset[str]] = {}
    for start in graph:
        seen: set[str] = set()
        frontier = [start]
        while frontier:
            for nxt in graph[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        reachable[start] = frozenset(seen)
    return reachable


_REACHABLE: Final = _closure(DIRACX_TRANSITIONS)


def is_reachable(old: str, new: str) -> bool:
    """Whether a job in DiracX status ``old`` can later be seen in ``new`` (same counts)."""
    return old == new or new in _REACHABLE.get(old, frozenset())
