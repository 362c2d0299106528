"""The local test system: a simulated DIRAC service and workload generators."""

from ._dirac_client import DiracAsyncClient, DiracBlockingClient, DiracSimProcess
from ._dirac_service import DIRAC_STATUS_MAPPING, DIRAC_STATUSES, DiracSimConfig, DiracSimService, ServiceError
from ._workload import WorkloadConfig, generate_workload, local_command, split_by_backend

__all__ = [
    "DIRAC_STATUSES",
    "DIRAC_STATUS_MAPPING",
    "DiracAsyncClient",
    "DiracBlockingClient",
    "DiracSimConfig",
    "DiracSimProcess",
    "DiracSimService",
    "ServiceError",
    "WorkloadConfig",
    "generate_workload",
    "local_command",
    "split_by_backend",
]
