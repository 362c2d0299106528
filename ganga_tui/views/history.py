"""Each job's latest transitions, packed: one ``bytes`` a job, made into :class:`Transition` objects when read.

Only a job's detail view reads a history, one job at a time, while every job keeps one. As a
list of ``Transition`` dataclasses they cost 444 bytes a job at 100,000 jobs (2.7 transitions
each); packed, 14 bytes a transition and one ``bytes`` header, about 80 a job with its dict entry.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Final

from monitor_core import JobStatus

from ..job_rows import Transition

__all__ = ["Histories"]

_STEP: Final = struct.Struct("<dBBI")
"""One transition: its time, its old status's code plus one (0: none), its new status's code, its texts' index."""
_STATUSES: Final = tuple(JobStatus)
_CODES: Final = {status: code for code, status in enumerate(_STATUSES)}


class Histories(Mapping[str, list[Transition]]):
    """Each job's last ``limit`` transitions, oldest first, read as lists of :class:`Transition`.

    A source and a detail text are kept once for every transition that says them: a stream says
    a handful of them ("poll", "Done: Execution Complete") of every job.

    Args:
        limit: transitions kept per job.
        packed: where each job's packed transitions are kept (by default a dict of this object's
            own; the job table keeps them in its rows, one dict of 100,000 entries less).
    """

    def __init__(self, limit: int, packed: MutableMapping[str, bytes] | None = None) -> None:
        self.limit = limit
        self._packed: MutableMapping[str, bytes] = {} if packed is None else packed
        self._texts: list[tuple[str, str]] = []
        """Each distinct (source, info) pair, at the index a packed transition names."""
        self._text_index: dict[tuple[str, str], int] = {}

    def add(self, job_id: str, at: float, old: JobStatus | None, new: JobStatus, source: str, info: str = "") -> None:
        """Append a transition to the job's history, dropping its oldest past the limit."""
        texts = (source, info)
        index = self._text_index.get(texts)
        if index is None:
            index = self._text_index[texts] = len(self._texts)
            self._texts.append(texts)
        step = _STEP.pack(at, 0 if old is None else _CODES[old] + 1, _CODES[new], index)
        packed = self._packed.get(job_id)
        if packed is None:
            self._packed[job_id] = step
            return
        packed += step
        if len(packed) > self.limit * _STEP.size:
            packed = packed[-self.limit * _STEP.size :]
        self._packed[job_id] = packed

    def __getitem__(self, job_id: str) -> list[Transition]:
        texts = self._texts
        steps = []
        for at, old, new, index in _STEP.iter_unpack(self._packed[job_id]):
            source, info = texts[index]
            steps.append(Transition(at, _STATUSES[old - 1] if old else None, _STATUSES[new], source, info))
        return steps

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._packed

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)
