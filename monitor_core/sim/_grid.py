"""The simulated grid of a session's state directory: found again, or started to outlive it.

A real grid goes on running jobs when the session watching them is killed, and a resumed
session finds them there. The simulated one behaves the same: it runs in its own process
group (a signal to the session's group does not reach it), it writes its pid, start time
and port to ``DIR/grid.json``, a session started on the same state directory finds it
again through that file (checking that the pid is still that process, not a reused pid),
and it stops by itself after a spell without requests. The grid journals its jobs in the
same directory, so one started again after the first stopped still knows them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

import psutil

from ._dirac_client import DiracAsyncClient
from ._dirac_service import DiracSimConfig
from .dirac_server import GRID_FILE

__all__ = ["DiracGrid", "read_grid_file"]

log = logging.getLogger(__name__)

_START_TIMEOUT: Final = 30.0
_SAME_PROCESS: Final = 0.05
"""Most seconds between a recorded and a read start time of one process (clock ticks and rounding)."""


def read_grid_file(directory: Path) -> dict[str, Any] | None:
    """What ``grid.json`` says, or ``None`` when it is missing or unreadable."""
    try:
        data = json.loads((directory / GRID_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), int | float) for k in ("pid", "started", "port")):
        return None
    return data


def _is_that_process(pid: int, started: float) -> bool:
    """Whether ``pid`` is still the process that started at ``started`` (not a reused pid)."""
    try:
        process = psutil.Process(pid)
        return abs(process.create_time() - started) <= _SAME_PROCESS and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class DiracGrid:
    """The simulated DIRAC grid a session's state directory keeps.

    Args:
        directory: where the grid keeps ``grid.json`` and its log.
        config: how a newly started grid behaves (a found one keeps its own).
        idle_exit: seconds without a request after which the grid stops by itself.
    """

    def __init__(self, directory: Path, config: DiracSimConfig, *, idle_exit: float = 300.0) -> None:
        self.directory = Path(directory)
        self.config = config
        self.idle_exit = idle_exit
        self.port = 0
        self.pid: int | None = None
        self.started: float | None = None
        self.found = False
        """True when a running grid was found again rather than started."""
        self.restored = 0
        """Jobs a newly started grid took back from the journal of an earlier one."""

    @property
    def knows_earlier_jobs(self) -> bool:
        """Whether the jobs an earlier session put on this state directory's grid are known to it."""
        return self.found or self.restored > 0

    async def find_or_start(self) -> int:
        """Reach the grid of this state directory, starting one if none runs; return its port.

        Raises:
            RuntimeError: a new grid did not come up.
        """
        info = await asyncio.to_thread(read_grid_file, self.directory)
        if info is not None and await self._answers(info):
            self.pid, self.started, self.port = int(info["pid"]), float(info["started"]), int(info["port"])
            self.found = True
            log.info("found the simulated grid (pid %d, port %d) again", self.pid, self.port)
            return self.port
        await self._start()
        return self.port

    async def _answers(self, info: dict[str, Any]) -> bool:
        if not await asyncio.to_thread(_is_that_process, int(info["pid"]), float(info["started"])):
            return False
        try:
            async with asyncio.timeout(5):
                answer = await DiracAsyncClient(port=int(info["port"])).call("ping")
        except (OSError, ValueError, TimeoutError):
            return False
        return answer.get("Value") == "pong"

    async def _start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "monitor_core.sim.dirac_server",
            "--config",
            json.dumps(self.config.to_dict()),
            "--state-dir",
            str(self.directory),
            "--idle-exit",
            str(self.idle_exit),
        ]
        # Popen, not asyncio's subprocess: asyncio kills the children it started when their
        # transport closes, and this one must outlive the session.
        process = await asyncio.to_thread(_spawn_detached, command, self.directory / "grid.log")
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            info = await asyncio.to_thread(read_grid_file, self.directory)
            if info is not None and info["pid"] == process.pid:
                self.pid, self.started, self.port = process.pid, float(info["started"]), int(info["port"])
                self.restored = int(info.get("restored", 0))
                log.info(
                    "started the simulated grid (pid %d, port %d, %d jobs taken back)",
                    self.pid,
                    self.port,
                    self.restored,
                )
                return
            if process.poll() is not None:
                break
            await asyncio.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        tail = await asyncio.to_thread(_tail, self.directory / "grid.log")
        raise RuntimeError(f"the simulated grid did not start: {tail}")

    async def keep_alive(self) -> None:
        """Ping the grid often enough that it never idles out under a live session (until cancelled).

        A session may leave its grid without calls for long (its backend paused, every job final
        and its outputs collected); the grid must still be there if it needs it again.
        """
        every = max(0.05, self.idle_exit / 3)
        while True:
            await asyncio.sleep(every)
            try:
                async with asyncio.timeout(5):
                    await DiracAsyncClient(port=self.port).call("ping")
            except (OSError, ValueError, TimeoutError) as exc:
                log.warning("the simulated grid (pid %s) did not answer a ping: %s", self.pid, exc)

    async def stop(self) -> None:
        """Stop the grid (when it is still the process that was found or started)."""
        if self.pid is None or self.started is None:
            return
        pid, started = self.pid, self.started
        self.pid = None
        if not await asyncio.to_thread(_is_that_process, pid, started):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if not await asyncio.to_thread(_is_that_process, pid, started):
                return
            await asyncio.sleep(0.05)
        if await asyncio.to_thread(_is_that_process, pid, started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _spawn_detached(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
            close_fds=True,
        )


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-1500:] or "(no output)"
    except OSError as exc:
        return f"(no log: {exc})"
