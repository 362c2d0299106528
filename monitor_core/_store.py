"""The session's jobs and pending work in SQLite, so a killed session resumes.

Writes are batched: the scheduler marks jobs dirty and a flusher commits them on a
thread of its own every fraction of a second. What a crash can lose is only the last
fraction of a second of status news, which the next poll learns again from the backend;
submissions and output collections are written before they are acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from ._model import Job, JobStatus

__all__ = ["SessionStore"]

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

    Args:
        path: the database file (created if missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One thread owns the connection, so SQLite never sees two threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitor[store]")
        self._connection: sqlite3.Connection | None = None
        self._dirty: dict[str, Job] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._executor.submit(self._open).result()

    def _open(self) -> None:
        connection = sqlite3.connect(self.path, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(_SCHEMA)
        self._connection = connection

    def _db(self) -> sqlite3.Connection:
        assert self._connection is not None
        return self._connection

    # -- reading -------------------------------------------------------------------------

    def load_jobs(self) -> list[Job]:
        """Every job the session has, in id order."""
        rows = self._executor.submit(lambda: self._db().execute("SELECT * FROM jobs").fetchall()).result()
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

    def collected_outputs(self) -> dict[str, tuple[str, ...]]:
        """Job id -> files, for every output collected so far."""
        rows = self._executor.submit(
            lambda: self._db().execute("SELECT job_id, files FROM outputs").fetchall()
        ).result()
        return {job_id: tuple(json.loads(files)) for job_id, files in rows}

    def get_meta(self, key: str) -> str | None:
        """A session-level setting, or ``None``."""
        row = self._executor.submit(
            lambda: self._db().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        ).result()
        return None if row is None else str(row[0])

    # -- writing -------------------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        """Remember a session-level setting now."""
        self._executor.submit(
            lambda: self._db().execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        ).result()

    def _write(self, rows: list[_Row]) -> None:
        db = self._db()
        db.execute("BEGIN")
        db.executemany(_UPSERT, rows)
        db.execute("COMMIT")

    async def save_now(self, jobs: Iterable[Job]) -> None:
        """Write jobs before returning (used for submissions)."""
        rows = [_row(job) for job in jobs]
        await asyncio.get_running_loop().run_in_executor(self._executor, self._write, rows)

    def mark_dirty(self, job: Job) -> None:
        """Have the next flush write this job."""
        self._dirty[job.job_id] = job

    async def record_output(self, job_id: str, files: tuple[str, ...]) -> None:
        """Write that a job's output was collected, before returning."""

        def write() -> None:
            self._db().execute(
                "INSERT OR IGNORE INTO outputs VALUES (?, ?, ?)", (job_id, time.time(), json.dumps(list(files)))
            )

        await asyncio.get_running_loop().run_in_executor(self._executor, write)

    async def flush(self) -> None:
        """Write every dirty job now."""
        if not self._dirty:
            return
        rows = [_row(job) for job in self._dirty.values()]
        self._dirty.clear()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._write, rows)

    async def run_flusher(self, every: float = 0.5) -> None:
        """Flush dirty jobs periodically until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(every)
                await self.flush()
        finally:
            with contextlib.suppress(Exception):
                rows = [_row(job) for job in self._dirty.values()]
                self._dirty.clear()
                if rows:
                    self._executor.submit(self._write, rows).result()

    def close(self) -> None:
        """Close the database."""

        def close_connection() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        self._executor.submit(close_connection).result()
        self._executor.shutdown(wait=True)
