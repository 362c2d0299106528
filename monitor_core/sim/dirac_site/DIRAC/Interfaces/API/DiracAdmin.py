"""DIRAC's administration API: the few calls Ganga makes."""

from __future__ import annotations

from typing import Any

from ... import S_OK
from ..._service import call

__all__ = ["DiracAdmin"]


class DiracAdmin:
    """Administrative calls on the simulated service."""

    def getServicePorts(self, *_args: Any) -> dict[str, Any]:
        """The service's address."""
        from ..._service import _address

        address = _address()
        return S_OK({"WorkloadManagement/JobMonitoring": address[1] if address else None})

    def getJobPilotOutput(self, job_id: int, directory: str = "") -> dict[str, Any]:
        """The pilot's output: on the simulated grid, the job's own output so far."""
        return call("peekJob", int(job_id))
