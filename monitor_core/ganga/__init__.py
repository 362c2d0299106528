"""The monitor inside a real Ganga session.

``start_monitor()`` in a Ganga session (or in ``~/.ganga.py``) puts Ganga's jobs and Ganga's
own monitoring activity on the bus and serves it on the user's socket, where
``ganga-monitor-tui`` attaches. ``start_monitor(drive=True)`` (or ``[GangaMonitor]mode=drive``)
replaces Ganga's monitoring loop with the scheduler. Ganga itself is imported only when the
monitor starts, so this package imports without it.
"""

from ._changes import StatusChange, ganga_status
from ._drive import DriveConfig
from ._monitor import GangaMonitor, current_monitor, start_monitor, stop_monitor

__all__ = [
    "DriveConfig",
    "GangaMonitor",
    "StatusChange",
    "current_monitor",
    "ganga_status",
    "start_monitor",
    "stop_monitor",
]
