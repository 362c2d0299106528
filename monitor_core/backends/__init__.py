"""Backends: where jobs run, behind one small contract."""

from ._base import (
    Backend,
    BackendError,
    Capabilities,
    FetchResult,
    MalformedAnswer,
    OutputUnavailable,
    PollResult,
    Rejection,
    ServiceUnreachable,
    StatusListener,
    StatusReport,
)
from ._runners import AsyncRunner, CallRunner, ProcessRunner, RemoteError, RunnerStatistics, ThreadRunner, WorkerDied

__all__ = [
    "AsyncRunner",
    "Backend",
    "BackendError",
    "CallRunner",
    "Capabilities",
    "FetchResult",
    "MalformedAnswer",
    "OutputUnavailable",
    "PollResult",
    "ProcessRunner",
    "Rejection",
    "RemoteError",
    "RunnerStatistics",
    "ServiceUnreachable",
    "StatusListener",
    "StatusReport",
    "ThreadRunner",
    "WorkerDied",
]
