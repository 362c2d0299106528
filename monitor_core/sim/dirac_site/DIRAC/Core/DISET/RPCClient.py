"""DIRAC's generic RPC client, for the services Ganga's commands reach directly."""

from __future__ import annotations

from typing import Any

from ..._service import call

__all__ = ["RPCClient"]


class RPCClient:
    """A client of one DIRAC service, e.g. ``RPCClient('WorkloadManagement/JobMonitoring')``."""

    def __init__(self, service: str, **_kwargs: Any) -> None:
        self.service = service

    def getJobAttributes(self, job_id: int) -> dict[str, Any]:
        """A job's attributes (status, application status, site, name)."""
        return call("getJobAttributes", int(job_id))

    def getJobParameters(self, job_id: int) -> dict[str, Any]:
        """A job's parameters."""
        return call("getJobParameters", int(job_id))
