"""The demo's monitoring session in a child process, serving its bus on the user's socket.

``ganga-monitor-tui --demo`` starts ``ganga-monitor-sim --serve`` as a child in its own
process group and attaches to it like any other viewer, exactly as beside a Ganga session:
the scheduler never shares a core's event loop with the app. The session outlives a viewer
that crashes (attach again with ``--attach``); quitting the TUI stops it unless asked to keep it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

from monitor_core import SessionConfig
from monitor_core.transports.unix_socket import socket_path_for

__all__ = ["DemoSession", "DemoStartError"]

_READY_TIMEOUT: Final = 120.0
_STOP_TIMEOUT: Final = 60.0
"""Seconds a stopping session gets to publish its end and save its state before it is killed."""


class DemoStartError(RuntimeError):
    """The demo's session process did not come up; the text says why, with its last log lines."""


class DemoSession:
    """A simulated session run by ``ganga-monitor-sim --serve`` in a child process.

    Args:
        config: the session's shape (its state directory names it).
    """

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.state_dir = Path(config.state_dir)
        self.name = self.state_dir.name
        self.socket = socket_path_for(self.name)
        """Where the session serves its bus."""
        self.log_path = self.state_dir / "session.log"
        """The session's own messages (kept off the viewer's terminal)."""
        self.pid: int | None = None
        self._process: asyncio.subprocess.Process | None = None

    def command(self) -> list[str]:
        """The command line that runs the session (``ganga-monitor-sim``), without the readiness pipe."""
        config = self.config
        command = [
            sys.executable,
            "-m",
            "monitor_core.sim.cli",
            "--serve",
            "--socket",
            str(self.socket),
            "--name",
            self.name,
            "--state-dir",
            str(self.state_dir),
            "--jobs",
            str(config.jobs),
            "--backends",
            ",".join(config.backends),
            "--latency",
            repr(config.dirac_latency),
            "--error-rate",
            repr(config.dirac_error_rate),
            "--hang-rate",
            repr(config.dirac_hang_rate),
            "--failure-rate",
            repr(config.failure_rate),
            "--mean-duration",
            repr(config.mean_duration),
            "--local-mean-duration",
            repr(config.local_mean_duration),
            "--dirac-client",
            config.dirac_client,
            "--seed",
            str(config.seed),
        ]
        if config.poll_interval is not None:
            command += ["--poll-interval", repr(config.poll_interval)]
        if config.dirac_port is not None:
            command += ["--dirac-port", str(config.dirac_port)]
        return command

    async def start(
        self, ready_within: float = _READY_TIMEOUT, *, on_step: Callable[[str], None] | None = None
    ) -> Path:
        """Start the session and wait until it serves; returns its socket.

        Args:
            ready_within: seconds the session may take to serve.
            on_step: told, on the loop, each step of the session's start as it begins.

        Raises:
            DemoStartError: it exited or did not serve in time.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        read_end, write_end = os.pipe()
        try:
            with self.log_path.open("ab") as log:
                self._process = await asyncio.create_subprocess_exec(
                    *self.command(),
                    "--ready-fd",
                    str(write_end),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=(write_end,),
                    # Its own process group: a Ctrl-C or a crash of the viewer does not take it down.
                    start_new_session=True,
                )
        finally:
            os.close(write_end)
        self.pid = self._process.pid
        try:
            loop = asyncio.get_running_loop()

            def stepped(what: str) -> None:
                if on_step is not None:
                    loop.call_soon_threadsafe(on_step, what)

            async with asyncio.timeout(ready_within):
                answer = await asyncio.to_thread(_read_until_ready, read_end, stepped)
        except TimeoutError:
            await self.stop()
            reason = f"the demo session did not serve within {ready_within:.0f}s; {self._log_tail()}"
            raise DemoStartError(reason) from None
        finally:
            os.close(read_end)
        if not answer.startswith("ready"):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._process.wait()
            raise DemoStartError(f"the demo session exited ({self._process.returncode}); {self._log_tail()}")
        return self.socket

    @property
    def running(self) -> bool:
        """Whether the session process is alive."""
        return self._process is not None and self._process.returncode is None

    async def stop(self, grace: float = _STOP_TIMEOUT) -> int | None:
        """Stop the session (it publishes its end to viewers and cleans up); returns its exit status."""
        process = self._process
        if process is None or process.returncode is not None:
            return None if process is None else process.returncode
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                return await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            return await process.wait()

    def _log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return "no log"
        return "its log ends:\n" + "\n".join(text) if text else f"its log {self.log_path} is empty"

    def keep_message(self) -> str:
        """What to tell a user whose viewer leaves the session running."""
        return (
            f"the demo session keeps running (pid {self.pid}), serving on {self.socket}\n"
            f"  watch it again:  ganga-monitor-tui --attach {self.socket}\n"
            f"  stop it:         kill {self.pid}"
        )

    def stopped_message(self) -> str:
        """What to tell a user whose quitting stopped the session."""
        return (
            f"stopped the demo session (pid {self.pid}); its state is in {self.state_dir}\n"
            "  to keep a demo running after the viewer quits, add --keep-session, or run the session yourself:\n"
            "  ganga-monitor-sim --serve --jobs N   (then: ganga-monitor-tui)"
        )


def _read_until_ready(fd: int, on_step: Callable[[str], None]) -> str:
    """Read the session's lines until its ``ready`` line (returned) or the pipe's end (``""``).

    ``step WHAT`` lines, each step of the start as it begins, go to ``on_step``.
    """
    with os.fdopen(os.dup(fd), "r", errors="replace") as stream:
        for line in stream:
            kind, _, rest = line.rstrip("\n").partition(" ")
            if kind == "ready":
                return line
            if kind == "step":
                on_step(rest)
    return ""
