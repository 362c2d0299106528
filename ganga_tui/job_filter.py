"""Which jobs the table shows, and in what order: the ``/`` box's language and the sort keys."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from monitor_core import JobStatus

from .job_rows import JobRow

__all__ = ["SORT_KEYS", "JobFilter", "SortKey", "sort_value"]

SortKey = Literal["id", "name", "backend", "status", "updated", "next_poll", "warnings"]
SORT_KEYS: Final[tuple[SortKey, ...]] = ("id", "name", "backend", "status", "updated", "next_poll", "warnings")
_SHARED_TEXTS: Final = 4096
"""Groups and details a filter remembers the answer for (a few hundred in practice)."""


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs the table shows. Parsed from the ``/`` box, e.g. ``s:running b:local batch003``."""

    statuses: frozenset[JobStatus] = frozenset()
    backends: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    text: str = ""
    warnings_only: bool = False

    @property
    def active(self) -> bool:
        """Anything is filtered out."""
        return bool(self.statuses or self.backends or self.groups or self.text or self.warnings_only)

    @classmethod
    def parse(cls, query: str) -> JobFilter:
        """Read a filter from words: ``status:``/``s:``, ``backend:``/``b:``, ``group:``/``g:``, ``is:warn``.

        Comma-separated values are alternatives; other words must all appear in the job's
        id, name, group or backend detail. Unknown statuses are treated as text.
        """
        statuses: set[JobStatus] = set()
        backends: set[str] = set()
        groups: set[str] = set()
        words: list[str] = []
        warnings_only = False
        for word in query.split():
            prefix, _, value = word.partition(":")
            prefix = prefix.lower()
            values = [v for v in value.split(",") if v]
            if prefix in ("s", "status") and values:
                known = [JobStatus(v.lower()) for v in values if v.lower() in JobStatus._value2member_map_]
                if len(known) == len(values):
                    statuses.update(known)
                    continue
            elif prefix in ("b", "backend") and values:
                backends.update(values)
                continue
            elif prefix in ("g", "group") and values:
                groups.update(values)
                continue
            elif prefix == "is" and value.lower() in ("warn", "warning", "warnings"):
                warnings_only = True
                continue
            words.append(word.lower())
        return cls(frozenset(statuses), frozenset(backends), frozenset(groups), " ".join(words), warnings_only)

    def describe(self) -> str:
        """The filter in the words it was parsed from, normalised."""
        parts = []
        if self.statuses:
            parts.append("s:" + ",".join(sorted(self.statuses)))
        if self.backends:
            parts.append("b:" + ",".join(sorted(self.backends)))
        if self.groups:
            parts.append("g:" + ",".join(sorted(self.groups)))
        if self.warnings_only:
            parts.append("is:warn")
        if self.text:
            parts.append(self.text)
        return " ".join(parts)

    def matches(self, row: JobRow) -> bool:
        """Whether the table shows ``row``."""
        return self.predicate()(row)

    def predicate(self) -> Callable[[JobRow], bool]:
        """:meth:`matches` as one function made for this filter's criteria alone.

        A view of 100,000 rows is filtered by calling it on each: the criteria not in use are
        not looked at per row (a general test cost 68 ms for 100,000 rows).
        """
        tests: list[Callable[[JobRow], bool]] = []
        if self.statuses:
            statuses = self.statuses
            tests.append(lambda row: row.status in statuses)
        if self.backends:
            backends = self.backends
            tests.append(lambda row: row.backend in backends)
        if self.groups:
            groups = self.groups
            tests.append(lambda row: row.group in groups)
        if self.warnings_only:
            tests.append(lambda row: bool(row.warnings))
        tests.extend(_contains(word) for word in self.text.split())
        if not tests:
            return lambda row: True
        # Chained with ``and``, cheapest first: a generator per row would cost more than the tests.
        predicate = tests[0]
        for test in tests[1:]:
            predicate = _both(predicate, test)
        return predicate

    def narrows(self, other: JobFilter) -> bool:
        """Every job this filter matches, ``other`` matches too (so this one can search ``other``'s result).

        True when the non-text criteria are equal and each of ``other``'s words lies inside one of
        this filter's words: what typing one more letter into the box does.
        """
        if (self.statuses, self.backends, self.groups, self.warnings_only) != (
            other.statuses,
            other.backends,
            other.groups,
            other.warnings_only,
        ):
            return False
        words = self.text.split()
        return all(any(old in new for new in words) for old in other.text.split())


def _contains(word: str) -> Callable[[JobRow], bool]:
    """Whether ``word`` (lower case, no spaces) is in a row's id, name, group or backend detail, in any case.

    Field by field, made lower case as they are read, not kept: a row's lower-case text, kept
    once searched, held 120 bytes a job (12 MB at 100,000) from the first filter on. A word has
    no spaces, so it lies within one field or in none. Groups and details are texts many jobs
    share: whether each holds the word is worked out once.
    """
    shared = _Answers(word)

    def test(row: JobRow) -> bool:
        record = row.record
        return (
            shared[record.group] or word in record.name.lower() or shared[record.info] or word in record.job_id.lower()
        )

    return test


class _Answers(dict[str, bool]):
    """Whether each text holds a word, worked out the first time the text is asked about."""

    def __init__(self, word: str) -> None:
        super().__init__()
        self.word = word

    def __missing__(self, text: str) -> bool:
        if len(self) >= _SHARED_TEXTS:
            self.clear()
        found = self[text] = self.word in text.lower()
        return found


def _both(first: Callable[[JobRow], bool], second: Callable[[JobRow], bool]) -> Callable[[JobRow], bool]:
    return lambda row: first(row) and second(row)


def sort_value(row: JobRow, key: SortKey) -> tuple[object, ...]:
    """The value a row sorts by under ``key``; ties fall back to submission order."""
    if key == "name":
        return (row.name, row.order)
    if key == "backend":
        return (row.backend, row.order)
    if key == "status":
        return (_STATUS_ORDER[row.status], row.order)
    if key == "updated":
        return (row.last_confirmed, row.order)
    if key == "next_poll":
        return (row.next_poll_at if row.next_poll_at is not None else float("inf"), row.order)
    if key == "warnings":
        return (-len(row.warnings), row.order)
    return (row.id_key, row.order)


_STATUS_ORDER: Final = {status: index for index, status in enumerate(JobStatus)}
