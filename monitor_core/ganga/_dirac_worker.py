"""DIRAC's client in its own process: the bulk status call of drive mode's Dirac lane.

Built by :class:`~monitor_core.backends.ProcessRunner` in a subprocess worker, in the DIRAC
environment Ganga uses (``[DIRAC]DiracEnvJSON``): its variables are set and its Python paths
(``PYTHONPATH``, and ``DIRACOS``'s ``site-packages`` as Ganga's own DIRAC executor does) put
first, then DIRAC is initialised once. A hung DIRAC call hangs only this process, which the
lane kills on its timeout.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["DiracStatusClient"]

_PYTHON_DIR = re.compile(r"python[23]\.[0-9]+$")


def _dirac_paths(environment: dict[str, str]) -> list[str]:
    paths = [path for path in environment.get("PYTHONPATH", "").split(os.pathsep) if path]
    diracos = environment.get("DIRACOS", "")
    lib = Path(diracos) / "lib"
    if diracos and lib.is_dir():
        for entry in sorted(lib.iterdir()):
            if _PYTHON_DIR.match(entry.name) and entry.name != "python3.1":
                paths.append(str(entry / "site-packages"))
    return paths


class DiracStatusClient:
    """Asks DIRAC about jobs in bulk, through DIRAC's own ``Dirac().getJobStatus``.

    Args:
        env_json: the DIRAC environment file (``[DIRAC]DiracEnvJSON``), or empty to use this
            process's environment as it is.
        proxy: the proxy file to present (``X509_USER_PROXY``), if any.
    """

    def __init__(self, env_json: str = "", proxy: str = "") -> None:
        if env_json:
            with open(env_json) as stream:
                environment = {str(k): str(v) for k, v in json.load(stream).items()}
            os.environ.update(environment)
            for path in reversed(_dirac_paths(environment)):
                if path not in sys.path:
                    sys.path.insert(0, path)
        if proxy:
            os.environ["X509_USER_PROXY"] = proxy
        from DIRAC.Core.Base.Script import parseCommandLine

        parseCommandLine(ignoreErrors=True)
        from DIRAC.Interfaces.API.Dirac import Dirac

        self._dirac = Dirac()

    def status(self, dirac_ids: list[int]) -> list[list[Any]]:
        """``[id, Status, MinorStatus, Site]`` of each job DIRAC knows.

        Raises:
            RuntimeError: DIRAC answered ``S_ERROR`` or something that is not a status answer.
        """
        answer = self._dirac.getJobStatus([int(job_id) for job_id in dirac_ids])
        if not isinstance(answer, dict) or not answer.get("OK"):
            message = answer.get("Message") if isinstance(answer, dict) else answer
            raise RuntimeError(f"DIRAC: {message}")
        value = answer.get("Value")
        if not isinstance(value, dict):
            raise RuntimeError(f"DIRAC's status answer is not a mapping: {value!r:.200}")
        found: list[list[Any]] = []
        for job_id, record in value.items():
            if isinstance(record, dict):
                found.append([int(job_id), record.get("Status"), record.get("MinorStatus"), record.get("Site")])
            else:
                found.append([int(job_id), None, None, None])
        return found

    def ping(self) -> bool:
        """Whether the client is up (used to warm a worker)."""
        return True
