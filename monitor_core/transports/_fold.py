"""The transports fold with the one fold of the event stream, :class:`monitor_core.StateFold`."""

from __future__ import annotations

from .._fold import StateFold

__all__ = ["StateFold"]
