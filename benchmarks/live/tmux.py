"""A private tmux server with one fixed-size pane, driven through one control-mode client.

Every ``capture-pane`` and ``send-keys`` goes over the control client's pipe instead of a
new ``tmux`` process per call: polling the pane every 5 ms with a fork and exec each time
would cost the machine more than the program under test, and would add its own jitter to
every key-to-screen time.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["INSTALL_HINT", "TmuxError", "TmuxPane", "tmux_binary"]

INSTALL_HINT = "install tmux first, e.g. `apt-get update && apt-get install -y tmux` (Debian/Ubuntu)"
_END = re.compile(rb"^%(end|error) \d+ (\d+) \d+$")
_BEGIN = re.compile(rb"^%begin \d+ (\d+) \d+$")


class TmuxError(RuntimeError):
    """tmux is missing, refused a command, or its control client went away."""


def tmux_binary() -> str:
    """The tmux on PATH.

    Raises:
        TmuxError: there is none; the message says how to install it.
    """
    found = shutil.which("tmux")
    if found is None:
        raise TmuxError(f"tmux not found on PATH; {INSTALL_HINT}")
    return found


class TmuxPane:
    """One command in a detached ``width`` x ``height`` tmux session on a private server.

    The pane stays after its command exits (``remain-on-exit``) so its last screen and exit
    status can still be read. Use as a context manager: leaving it kills the private server.

    Args:
        command: the program and its arguments.
        width: columns of the pane.
        height: rows of the pane.
        env: environment of the tmux server and so of the command.
        cwd: working directory of the command.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        width: int = 200,
        height: int = 50,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.binary = tmux_binary()
        self.command = list(command)
        self.width = width
        self.height = height
        self.env = dict(env if env is not None else os.environ)
        self.cwd = cwd
        self.server = f"ganga-live-{os.getpid()}-{time.monotonic_ns() % 1_000_000}"
        self.session = "live"
        self.pane_pid: int | None = None
        self.socket_path: Path | None = None
        self._control: subprocess.Popen[bytes] | None = None
        self._next_number: int | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def _tmux(self, *args: str) -> str:
        completed = subprocess.run(
            [self.binary, "-L", self.server, "-f", os.devnull, *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if completed.returncode != 0:
            raise TmuxError(f"tmux {' '.join(args)}: {completed.stderr.strip() or completed.returncode}")
        return completed.stdout

    def start(self) -> None:
        """Start the server, the session running the command, and the control client."""
        # One chain, run by the server before it reaps any child: the pane cannot exit unseen.
        self._tmux(
            "new-session",
            "-d",
            "-s",
            self.session,
            "-x",
            str(self.width),
            "-y",
            str(self.height),
            shlex.join(self.command),
            ";",
            "set-option",
            "-g",
            "remain-on-exit",
            "on",
            ";",
            "set-option",
            "-g",
            "window-size",
            "manual",
        )
        pid, _, socket = self._tmux(
            "display-message", "-p", "-t", self.session, "#{pane_pid} #{socket_path}"
        ).partition(" ")
        self.pane_pid = int(pid)
        self.socket_path = Path(socket.strip())
        self._control = subprocess.Popen(
            [
                self.binary,
                "-L",
                self.server,
                "-f",
                os.devnull,
                "-C",
                "attach-session",
                "-t",
                self.session,
                "-f",
                "no-output,ignore-size",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=self.env,
        )
        self._reply("attach-session")  # tmux answers the attach itself first, with an empty block
        size = self.call(f"display-message -p -t {self.session} '#{{window_width}}x#{{window_height}}'")
        if size.strip() != f"{self.width}x{self.height}":
            raise TmuxError(f"the pane is {size.strip()}, not {self.width}x{self.height}")

    def close(self) -> None:
        """Detach the control client and kill the private server (and what still runs in it)."""
        if self._control is not None:
            with contextlib.suppress(OSError, ValueError):
                assert self._control.stdin is not None
                self._control.stdin.close()
            try:
                self._control.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._control.kill()
                self._control.wait()
            self._control = None
        with contextlib.suppress(TmuxError, subprocess.TimeoutExpired):
            self._tmux("kill-server")
        if self.socket_path is not None:
            # The server does not always remove its socket when killed; it is ours, so tidy it.
            with contextlib.suppress(OSError):
                self.socket_path.unlink()

    def __enter__(self) -> TmuxPane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands through the control client ---------------------------------------------------

    def call(self, command: str) -> str:
        """Run one tmux command on the control client and return its output.

        Raises:
            TmuxError: tmux answered with an error or the client is gone.
        """
        control = self._control
        if control is None or control.stdin is None:
            raise TmuxError("the control client is not running")
        try:
            control.stdin.write(command.encode() + b"\n")
            control.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise TmuxError(f"the control client went away: {exc}") from exc
        return self._reply(command)

    def _reply(self, command: str) -> str:
        control = self._control
        if control is None or control.stdout is None:
            raise TmuxError("the control client is not running")
        body: list[bytes] = []
        number: bytes | None = None
        while True:
            line = control.stdout.readline()
            if not line:
                raise TmuxError("the control client closed its output")
            line = line.rstrip(b"\n")
            if number is None:
                # Notifications (%window-add, %session-changed, ...) come between replies.
                began = _BEGIN.match(line)
                if began:
                    number = began.group(1)
                continue
            ended = _END.match(line)
            if ended and ended.group(2) == number:
                text = b"\n".join(body).decode("utf-8", "replace")
                if ended.group(1) == b"error":
                    raise TmuxError(f"tmux {command!r}: {text}")
                return text
            body.append(line)

    def capture(self) -> str:
        """The pane's visible text now (no colours)."""
        return self.call(f"capture-pane -p -t {self.session}")

    def send(self, *keys: str, literal: bool = False) -> None:
        """Type keys into the pane: tmux key names (``End``, ``Escape``) or, with ``literal``, text."""
        flag = "-l " if literal else ""
        self.call(f"send-keys -t {self.session} {flag}" + " ".join(shlex.quote(key) for key in keys))

    def pane_state(self) -> tuple[bool, int | None]:
        """Whether the command has exited, and its exit status if so."""
        text = self.call(
            f"display-message -p -t {self.session} '#{{pane_dead}} #{{pane_dead_status}} #{{pane_dead_signal}}'"
        )
        dead, status, signal = ([*text.strip().split(" "), "", "", ""])[:3]
        if status.lstrip("-").isdigit():
            return dead == "1", int(status)
        # Killed by a signal: the shell's convention, 128 + its number.
        return dead == "1", 128 + int(signal) if signal.isdigit() else None
