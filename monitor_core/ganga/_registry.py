"""Reading Ganga's job registry and configuration (GangaCore imported inside functions)."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from ._changes import StatusChange
from ._hooks import job_change

__all__ = ["configured_mode", "existing_jobs", "poll_rate", "raw_job", "thread_pool_size"]

log = logging.getLogger(__name__)

_SECTION = "GangaMonitor"
_TRUE = frozenset({"drive", "true", "yes", "1", "on"})
_FALSE = frozenset({"observe", "false", "no", "0", "off"})


def poll_rate(backend: str) -> float:
    """Seconds between two of Ganga's own polls of a backend (``[PollThread]<backend>``)."""
    from GangaCore.Utility.Config import getConfig

    config = getConfig("PollThread")
    try:
        return float(config[backend]) if backend in config else float(config["default_backend_poll_rate"])
    except (KeyError, TypeError, ValueError):
        return 30.0


def thread_pool_size() -> int:
    """How many blocking update calls Ganga's monitoring runs at once."""
    from GangaCore.Utility.Config import getConfig

    try:
        return int(getConfig("PollThread")["update_thread_pool_size"])
    except (KeyError, TypeError, ValueError):
        return 5


def configured_mode() -> bool | None:
    """Drive mode as configured, ``None`` when nothing says.

    Read from ``-o'[GangaMonitor]mode=drive'``, then the ``[GangaMonitor]`` section of
    ``~/.gangarc`` or another config file, then the ``GANGA_MONITOR_MODE`` environment
    variable. Ganga keeps sections it does not know in these buffers, so no section has to be
    made after Ganga's bootstrap (which Ganga forbids).
    """
    from GangaCore.Utility.Config import Config

    buffers = (Config.unknownUserConfigValues, Config.unknownGangarcFileValues, Config.unknownConfigFileValues)
    for buffer in buffers:
        section = {str(key).lower(): value for key, value in buffer.get(_SECTION, {}).items()}
        for key in ("mode", "drive"):
            if key in section:
                return _parse_mode(str(section[key]), f"[{_SECTION}]{key}")
    if "GANGA_MONITOR_MODE" in os.environ:
        return _parse_mode(os.environ["GANGA_MONITOR_MODE"], "GANGA_MONITOR_MODE")
    return None


def _parse_mode(text: str, where: str) -> bool | None:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    log.error("%s=%r is not a monitor mode (drive or observe); using observe", where, text)
    return None


def _jobs_registry() -> Any:
    from GangaCore.Core.GangaRepository import getRegistrySlice

    return getRegistrySlice("jobs")


def raw_job(job_id: str) -> Any:
    """The raw (unproxied) Ganga job of a full id such as ``"7"`` or ``"2.4"``.

    Raises:
        KeyError: no such job (removed meanwhile).
    """
    from GangaCore.Core.GangaRepository.Registry import RegistryKeyError, RegistryLockError
    from GangaCore.GPIDev.Base.Proxy import stripProxy

    head, _, rest = job_id.partition(".")
    try:
        job = stripProxy(_jobs_registry()(int(head)))
        for part in rest.split(".") if rest else ():
            job = job.subjobs[int(part)]
    except (RegistryKeyError, RegistryLockError, IndexError, ValueError) as exc:
        raise KeyError(job_id) from exc
    return job


def existing_jobs() -> list[StatusChange]:
    """Every job already in the registry (subjobs from Ganga's index cache), read once at the start."""
    from GangaCore.Core.GangaRepository.Registry import RegistryKeyError, RegistryLockError
    from GangaCore.GPIDev.Base.Proxy import getName, stripProxy
    from GangaCore.GPIDev.Lib.Job.Job import lazyLoadJobBackend, lazyLoadJobStatus

    registry = _jobs_registry()
    found: list[StatusChange] = []
    now = time.time()
    for job_number in registry.ids():
        try:
            job = stripProxy(registry(job_number))
            status = str(lazyLoadJobStatus(job))
            backend = str(getName(lazyLoadJobBackend(job)))
            found.append(StatusChange(str(job_number), backend, None, status, now, source="restore"))
            if status in ("submitted", "running", "completing") and len(job.subjobs):
                for subjob in job.subjobs:
                    change = job_change(subjob, None, "restore", at=now)
                    found.append(change)
        except (RegistryKeyError, RegistryLockError):
            continue  # removed while we looked
        except Exception:
            log.exception("job %s could not be read; it is not shown", job_number)
    return found
