"""Debian packages a test needs, installed once even when several test workers ask at once."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from typing import Final

APT_LOCK: Final = "/tmp/ganga-monitor-apt.lock"
"""Held around every install of the test set-up (``scripts/slurm-local`` takes it too): apt
refuses to run twice at once, and test workers start their components side by side."""


def apt_install(command: str, *packages: str, timeout: float = 600) -> str | None:
    """Install ``packages`` unless ``command`` is on the PATH; the reason it failed, or ``None``."""
    if shutil.which(command):
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"{command} is not installed and installing it needs root and apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open(APT_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if shutil.which(command):  # another worker installed it meanwhile
            return None
        for step in (["apt-get", "update"], ["apt-get", "install", "-y", *packages]):
            result = subprocess.run(
                step, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
            )
            if result.returncode != 0:
                return f"{' '.join(step)} failed: {result.stderr[-500:]}"
    return None
