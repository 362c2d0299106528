"""The session's jobs and pending work in SQLite, so a killed session resumes.

Writes are batched: the scheduler marks jobs dirty and a flusher commits them on a
thread of its own every fraction of a second. What a crash can lose is only the last
fraction of a second of status news, which the next poll learns again from the backend;
submissions and output collections are written before they are acknowledged.

A local fault (disk full, I/O or permission error) never escapes: the batch that failed
stays dirty and is written again with backoff, a :class:`LocalFault` (``backend=None``)
says so on the bus while it lasts and again with ``cleared=True`` once a write succeeds.
Every call that touches the file runs on the store's own thread, never on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

from ._events import Event, LocalFault
from ._model import Job, JobStatus
from ._time_slice import TimeSlice

__all__ = ["SessionStore"]

log = logging.getLogger(__name__)

_STORE_FAULTS: Final = (OSError, sqlite3.Error)
"""What a full disk, an I/O error or a permission problem surfaces as, from the file or SQLite."""
_WHAT: Final = "saving the session's jobs"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    name TEXT NOT NULL,
    grp TEXT NOT NULL,
    backend_id TEXT,
    status TEXT NOT NULL,
    status_since REAL NOT NULL,
    last_confirmed REAL NOT NULL,
    exit_code INTEGER,
    expected TEXT,
    outcome TEXT,
    info TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outputs (
    job_id TEXT PRIMARY KEY,
    collected_at REAL NOT NULL,
    files TEXT NOT NULL
);
"""
_UPSERT: Final = """
INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(job_id) DO UPDATE SET
    backend_id=excluded.backend_id, status=excluded.status, status_since=excluded.status_since,
    last_confirmed=excluded.last_confirmed, exit_code=excluded.exit_code,
    outcome=excluded.outcome, info=excluded.info
"""

_T = TypeVar("_T")
_Row = tuple[str, str, str, str, str | None, str, float, float, int | None, str | None, str | None, str]


def _row(job: Job) -> _Row:
    return (
        job.job_id,
        job.backend,
        job.name,
        job.group,
        job.backend_id,
        job.status.value,
        job.status_since,
        job.last_confirmed,
        job.exit_code,
        job.expected.value if job.expected else None,
        job.outcome.value if job.outcome else None,
        job.info,
    )


class SessionStore:
    """A session's SQLite file. Blocking calls run on the store's own thread.

    Open it with ``await store.open()`` before use.

    Args:
        path: the database file (created if missing).
        publish: where a :class:`LocalFault` about the store goes (the session's bus).
        retry_cap: longest wait, seconds, between attempts to write while writes fail.
    """

    def __init__(self, path: Path, *, publish: Callable[[Event], None] | None = None, retry_cap: float = 30.0) -> None:
        self.path = Path(path)
        # One thread owns the connection, so SQLite never sees two threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitor[store]")
        self._connection: sqlite3.Connection | None = None
        self._dirty: dict[str, Job] = {}
        self._outputs: dict[str, tuple[float, tuple[str, ...]]] = {}
        """Output collections not yet written (a fault kept them out)."""
        self._publish = publish
        self._retry_cap = retry_cap
        self._fault: str | None = None
        self.failures = 0
        """Writes that failed since the store was opened."""

    async def _run(self, function: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

    async def open(self) -> None:
        """Create or open the file and its tables.

        Raises:
            OSError: the directory cannot be made.
            sqlite3.Error: the file cannot be opened as a database.
        """
        await self._run(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(_SCHEMA)
        self._connection = connection

    def _db(self) -> sqlite3.Connection:
        assert self._connection is not None, "SessionStore.open() was not awaited"
        return self._connection

    @property
    def failing(self) -> bool:
        """True while writes fail (a :class:`LocalFault` is up)."""
        return self._fault is not None

    @property
    def unsaved(self) -> int:
        """Jobs and output collections waiting to be written."""
        return len(self._dirty) + len(self._outputs)

    # -- reading -------------------------------------------------------------------------

    async def load_jobs(self) -> list[Job]:
        """Every job the session has, in id order."""
        rows = await self._run(lambda: self._db().execute("SELECT * FROM jobs").fetchall())
        jobs = [
            Job(
                job_id=r[0],
                backend=r[1],
                name=r[2],
                group=r[3],
                backend_id=r[4],
                status=JobStatus(r[5]),
                status_since=r[6],
                last_confirmed=r[7],
                exit_code=r[8],
                expected=JobStatus(r[9]) if r[9] else None,
                outcome=JobStatus(r[10]) if r[10] else None,
                info=r[11],
            )
            for r in rows
        ]
        jobs.sort(key=lambda job: (len(job.job_id), job.job_id))
        return jobs

    async def collected_outputs(self) -> dict[str, tuple[str, ...]]:
        """Job id -> files, for every output collected so far."""
        rows = await self._run(lambda: self._db().execute("SELECT job_id, files FROM outputs").fetchall())
        return {job_id: tuple(json.loads(files)) for job_id, files in rows}

    async def get_meta(self, key: str) -> str | None:
        """A session-level setting, or ``None``."""
        row = await self._run(lambda: self._db().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone())
        return None if row is None else str(row[0])

    # -- writing -------------------------------------------------------------------------

    async def set_meta(self, key: str, value: str) -> None:
        """Remember a session-level setting now.

        Raises:
            OSError: the disk refused the write.
            sqlite3.Error: SQLite refused the write (a full disk, an I/O error).
        """
        await self._run(lambda: self._db().execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value)))

    def _write(self, rows: list[_Row], outputs: list[tuple[str, float, str]]) -> None:
        db = self._db()
        db.execute("BEGIN")
        try:
            db.executemany(_UPSERT, rows)
            db.executemany("INSERT OR IGNORE INTO outputs VALUES (?, ?, ?)", outputs)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    def mark_dirty(self, job: Job) -> None:
        """Have the next flush write this job."""
        self._dirty[job.job_id] = job

    async def save_now(self, jobs: Iterable[Job]) -> None:
        """Write jobs before returning (used for submissions).

        On a local fault the jobs stay queued for the flusher, which retries them.
        """
        # A submission of 90,000 jobs marked in one go held the loop for 20 ms. A flush that
        # runs meanwhile writes those marked so far, on the same thread, before this one's.
        time_slice = TimeSlice()
        for job in jobs:
            self.mark_dirty(job)
            if time_slice.spent():
                await time_slice.yield_to_loop()
        await self.flush()

    async def record_output(self, job_id: str, files: tuple[str, ...]) -> None:
        """Write that a job's output was collected, before returning.

        On a local fault the record stays queued for the flusher, which retries it.
        """
        self._outputs.setdefault(job_id, (time.time(), files))
        await self.flush()

    async def flush(self) -> bool:
        """Write every dirty job and output record now; False when a local fault kept them."""
        if not self._dirty and not self._outputs:
            return True
        # Take the batch; marks made while it is written go into a fresh one. On a fault the
        # batch goes back, under anything marked since (the same job objects, so no loss).
        jobs, self._dirty = self._dirty, {}
        outputs, self._outputs = self._outputs, {}
        batch = list(jobs.values())
        records = [(job_id, at, json.dumps(list(files))) for job_id, (at, files) in outputs.items()]
        try:
            # The rows are read on the store's thread, off the loop: a burst marks 100,000 jobs.
            # A job the loop changes meanwhile is marked dirty again, so the next flush writes it whole.
            await self._run(lambda: self._write([_row(job) for job in batch], records))
        except BaseException as exc:
            # A cancelled flush (the session closing) may leave its batch unwritten: the thread
            # had not picked it up. It goes back for the final write, which is an upsert anyway.
            self._dirty = jobs | self._dirty
            self._outputs = outputs | self._outputs
            if not isinstance(exc, _STORE_FAULTS):
                raise
            self._failed(exc)
            return False
        self._succeeded()
        return True

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        error = f"{type(exc).__name__}: {exc}"
        if self._fault != error:
            log.error("%s failed (%d jobs, %d outputs wait): %s", _WHAT, len(self._dirty), len(self._outputs), error)
            self._fault = error
            self._announce(LocalFault(at=time.time(), backend=None, what=_WHAT, error=error))

    def _succeeded(self) -> None:
        if self._fault is not None:
            log.warning("%s works again", _WHAT)
            self._announce(LocalFault(at=time.time(), backend=None, what=_WHAT, error=self._fault, cleared=True))
            self._fault = None

    def _announce(self, event: LocalFault) -> None:
        if self._publish is not None:
            self._publish(event)

    async def run_flusher(self, every: float = 0.5) -> None:
        """Flush periodically until cancelled, then once more; back off while writes fail."""
        delay = every
        try:
            while True:
                await asyncio.sleep(delay)
                delay = every if await self.flush() else min(self._retry_cap, delay * 2)
        finally:
            # Cancelled: one last synchronous attempt (the loop is going away).
            jobs, outputs = self._dirty, self._outputs
            if jobs or outputs:
                rows = [_row(job) for job in jobs.values()]
                records = [(job_id, at, json.dumps(list(files))) for job_id, (at, files) in outputs.items()]
                try:
                    self._executor.submit(self._write, rows, records).result()
                    self._dirty, self._outputs = {}, {}
                except _STORE_FAULTS as exc:
                    log.error("%s at the end failed; %d jobs are not saved: %s", _WHAT, len(jobs), exc)

    def _close_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def close(self) -> None:
        """Close the database (blocking; from a loop, use :meth:`aclose`)."""
        self._executor.submit(self._close_connection).result()
        self._executor.shutdown(wait=True)

    async def aclose(self) -> None:
        """Close the database without blocking the loop."""
        await self._run(self._close_connection)
        self._executor.shutdown(wait=False)
