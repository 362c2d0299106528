"""One session per state directory: an advisory lock file naming the session that holds it.

The lock is ``fcntl.flock`` on ``session.lock``. The kernel drops it when its holder's
process ends however it ends, so a lock file left by a killed session is stale by
construction: the next session takes the lock and overwrites the holder's details. A
second session while the first still runs is refused with the first one's pid and
command line.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Final

__all__ = ["LOCK_NAME", "StateDirectoryInUse", "StateDirectoryLock"]

log = logging.getLogger(__name__)

LOCK_NAME: Final = "session.lock"


class StateDirectoryInUse(RuntimeError):
    """Another live session holds the state directory."""

    def __init__(self, state_dir: Path, holder: dict[str, Any]) -> None:
        self.state_dir = state_dir
        self.holder = holder
        pid = holder.get("pid", "?")
        command = holder.get("command") or "an unknown command"
        host = holder.get("host")
        where = f" on {host}" if host and host != socket.gethostname() else ""
        super().__init__(
            f"state directory {state_dir} is in use by the session running as pid {pid}{where} "
            f"({command}); stop it first, or choose another --state-dir"
        )


class StateDirectoryLock:
    """Hold ``state_dir/session.lock`` for as long as this session lives.

    Args:
        state_dir: the session's state directory (created if missing).
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or say who has it.

        Raises:
            StateDirectoryInUse: a live session holds it.
            OSError: the directory or the lock file cannot be made.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StateDirectoryInUse(self.state_dir, holder) from None
        except BaseException:
            os.close(fd)
            raise
        previous = _read_holder(fd)
        if previous.get("pid") not in (None, os.getpid()):
            log.info("state directory %s: session pid %s ended without releasing it", self.state_dir, previous["pid"])
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "",
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode() + b"\n", 0)
        self._fd = fd

    def release(self) -> None:
        """Let the next session have the directory."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing drops the flock
        self._fd = None


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 64 * 1024, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
