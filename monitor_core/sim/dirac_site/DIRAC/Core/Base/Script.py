"""DIRAC's script start-up: ``parseCommandLine()`` before the API is used."""

from __future__ import annotations

__all__ = ["parseCommandLine", "registerSwitch", "setUsageMessage"]

_parsed = False


def parseCommandLine(ignoreErrors: bool = False) -> None:
    """Initialise the client (the simulated service needs no configuration beyond its address)."""
    global _parsed
    _parsed = True


def registerSwitch(*_args: object, **_kwargs: object) -> None:
    """Accept a command-line switch definition (none are used)."""


def setUsageMessage(*_args: object) -> None:
    """Accept a usage message."""
