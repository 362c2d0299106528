"""Where fetched job outputs land, each exactly once.

A fetch writes into a private temporary directory; renaming it to the job's directory
is the single, atomic act of collecting. A second fetch of the same job, after a crash
between the rename and the bookkeeping, finds the directory there and stops.

The ``async`` methods do their file-system work on a thread, so a slow or full disk never
holds up the event loop; an ``OSError`` reaches the caller, which decides whose fault it is.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Final

from ._paths import joined

__all__ = ["OutputSink"]


class OutputSink:
    """The outputs directory of a session: one subdirectory per job.

    Args:
        root: the directory (created if missing).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._clean_leftovers()

    def _clean_leftovers(self) -> None:
        for leftover in self.root.glob(".fetch-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def path(self, job_id: str) -> Path:
        """The directory holding a job's collected output."""
        return Path(joined(self.root, job_id))

    def collected(self, job_id: str) -> bool:
        """Whether the job's output was already collected."""
        return self.path(job_id).is_dir()

    def prepare(self, job_id: str) -> Path:
        """A fresh, empty directory for one fetch attempt."""
        staging = self.root / f".fetch-{job_id}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        return staging

    def commit(self, job_id: str, staging: Path) -> bool:
        """Make a fetch attempt's files the job's output.

        Returns:
            True if this call collected the output, False if it was already collected.
        """
        if self.collected(job_id):
            shutil.rmtree(staging, ignore_errors=True)
            return False
        try:
            os.rename(staging, self.path(job_id))
        except OSError:
            if self.collected(job_id):
                shutil.rmtree(staging, ignore_errors=True)
                return False
            raise
        return True

    def discard(self, staging: Path) -> None:
        """Throw away a failed attempt's files."""
        shutil.rmtree(staging, ignore_errors=True)

    def files(self, job_id: str) -> tuple[str, ...]:
        """The names of a job's collected files."""
        return _listing(self.path(job_id))

    # -- off the event loop ----------------------------------------------------------------------

    async def begin(self, job_id: str) -> Path | None:
        """A fresh staging directory for one fetch attempt, or ``None`` when the output is already collected.

        Raises:
            OSError: the directory could not be made.
        """
        return await asyncio.to_thread(lambda: None if self.collected(job_id) else self.prepare(job_id))

    async def finish(self, job_id: str, staging: Path) -> tuple[str, ...]:
        """Make an attempt's files the job's output (unless already collected); return the collected files.

        Raises:
            OSError: the files could not be listed or moved (the attempt's files are thrown away).
        """

        def finish() -> tuple[str, ...]:
            try:
                files = _listing(staging)
                if not self.commit(job_id, staging):
                    files = self.files(job_id)
            except OSError:
                self.discard(staging)
                raise
            return files

        return await asyncio.to_thread(finish)

    async def release(self, staging: Path) -> None:
        """Throw away an attempt's files, off the loop."""
        await asyncio.to_thread(self.discard, staging)

    async def collected_files(self, job_id: str) -> tuple[str, ...]:
        """:meth:`files`, off the loop."""
        return await asyncio.to_thread(self.files, job_id)


_SHARED_LISTINGS: Final = 1024
"""Distinct file lists kept for sharing; past that, a listing is kept as read."""
_listings: dict[tuple[str, ...], tuple[str, ...]] = {}


def _listing(directory: Path) -> tuple[str, ...]:
    """The file names of a job's outputs, sorted: one shared tuple of shared names per distinct list.

    The session keeps every collected job's list for its life, and most jobs of a session
    write the same files: made afresh per job, the names and the tuple cost about 200 bytes
    a job (20 MB at 100,000).
    """
    found = tuple(sorted(sys.intern(entry.name) for entry in os.scandir(directory)))
    shared = _listings.get(found)
    if shared is not None:
        return shared
    if len(_listings) < _SHARED_LISTINGS:
        _listings[found] = found
    return found
