"""Process exits as loop events: a pidfd per Local wrapper process, read by the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

__all__ = ["ExitWatcher"]

log = logging.getLogger(__name__)


class ExitWatcher:
    """Calls ``on_exit(job_id)`` on the loop when a watched process ends.

    A pidfd becomes readable when its process exits, so nothing polls.

    Args:
        loop: the monitor's loop; every method runs on it.
        on_exit: called with the job's id once its process has ended.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, on_exit: Callable[[str], None]) -> None:
        self._loop = loop
        self._on_exit = on_exit
        self._watched: dict[int, str] = {}

    def watch(self, job_id: str, pidfd: int | None) -> None:
        """Watch a process through its pidfd (``None``: it ended already)."""
        if pidfd is None:
            self._loop.call_soon(self._on_exit, job_id)
            return
        self._watched[pidfd] = job_id
        self._loop.add_reader(pidfd, self._fired, pidfd)

    def _fired(self, pidfd: int) -> None:
        job_id = self._watched.pop(pidfd, None)
        self._forget(pidfd)
        if job_id is not None:
            try:
                self._on_exit(job_id)
            except Exception:
                log.exception("handling the exit of job %s failed", job_id)

    def _forget(self, pidfd: int) -> None:
        self._loop.remove_reader(pidfd)
        with contextlib.suppress(OSError):
            os.close(pidfd)

    @property
    def watching(self) -> int:
        """Processes still running."""
        return len(self._watched)

    def close(self) -> None:
        """Stop watching and release every pidfd."""
        for pidfd in list(self._watched):
            self._forget(pidfd)
        self._watched.clear()
