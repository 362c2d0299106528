"""A stand-in DIRAC client, backed by ganga-monitor's simulated DIRAC service.

It has the part of DIRAC's Python API that Ganga's Dirac backend uses, with DIRAC's
``S_OK``/``S_ERROR`` answers. It is on ``sys.path`` only inside a DIRAC environment written
by ``python -m monitor_core.sim.dirac_env``, which also names the service to talk to in
``GANGA_MONITOR_DIRAC_SERVICE`` (``host:port``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["S_ERROR", "S_OK", "gLogger", "version"]

version = "v8.0-ganga-monitor-sim"


def S_OK(value: Any = None) -> dict[str, Any]:
    """DIRAC's successful answer."""
    return {"OK": True, "Value": value}


def S_ERROR(message: str = "") -> dict[str, Any]:
    """DIRAC's failed answer."""
    return {"OK": False, "Message": message}


class _Logger:
    """The few calls of DIRAC's ``gLogger`` that scripts make; they go to stderr."""

    def _say(self, level: str, message: str, *extra: Any) -> None:
        import sys

        print(f"{level}: {message} {' '.join(map(str, extra))}".rstrip(), file=sys.stderr)

    def info(self, message: str, *extra: Any) -> None:
        self._say("INFO", message, *extra)

    def notice(self, message: str, *extra: Any) -> None:
        self._say("NOTICE", message, *extra)

    def warn(self, message: str, *extra: Any) -> None:
        self._say("WARN", message, *extra)

    def error(self, message: str, *extra: Any) -> None:
        self._say("ERROR", message, *extra)

    def debug(self, message: str, *extra: Any) -> None:
        pass

    def setLevel(self, level: str) -> None:
        pass


gLogger = _Logger()
