"""The contract between the scheduler and a backend."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .._events import RejectionCategory
from .._model import JobSpec, JobStatus

__all__ = [
    "Backend",
    "BackendError",
    "Capabilities",
    "FetchResult",
    "MalformedAnswer",
    "OutputUnavailable",
    "PollResult",
    "Rejection",
    "ServiceUnreachable",
    "StatusListener",
    "StatusReport",
]


class BackendError(Exception):
    """A backend call failed in a way worth retrying (network, service error, worker death)."""


class MalformedAnswer(BackendError):
    """The backend's answer as a whole could not be understood; counted as a rejection."""


class OutputUnavailable(BackendError):
    """The backend will never have this job's output; retrying is pointless."""


class ServiceUnreachable(BackendError):
    """No connection to the service could be made: its fault or the network's, not the job's."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can take, and how the scheduler must treat it."""

    max_batch: int = 100
    """Most job ids one status call may carry (the service's bulk limit)."""
    max_concurrency: int = 4
    """Most status calls in flight at once."""
    fetch_concurrency: int = 2
    """Most output fetches in flight at once; fetches never take a status-call slot."""
    blocking: bool = False
    """The client's calls block, so they run on threads or in a subprocess."""
    isolated: bool = False
    """The client runs in a subprocess worker that is restarted when it dies or hangs."""
    push_updates: bool = False
    """The backend also reports changes by itself (e.g. a process exit), between polls."""
    fetches_output: bool = True
    """A job the backend reports finished is ``completing`` until its output is fetched. ``False``
    when the backend's own final status means the output is already in place (a Ganga session)."""
    poll_interval: float = 10.0
    """Target seconds between two status confirmations of an active job."""
    call_timeout: float = 30.0
    max_calls_per_minute: float | None = None
    """The calls (status polls and output fetches) the service allows this client in any
    minute; the lane holds calls back to keep within it."""
    fetch_outside_allowance: bool = False
    """Outputs come from storage the service's allowance does not cover (e.g. presigned sandbox
    URLs), so fetches do not count against ``max_calls_per_minute``."""


@dataclass(slots=True)
class StatusReport:
    """What a backend says of one job: its status, and the backend's own word for it.

    Read-only by convention. Not a frozen dataclass, which takes six times as long to make:
    a sweep of 100,000 jobs makes one for each.
    """

    backend_id: str
    status: JobStatus
    info: str = ""
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A part of a backend's answer that was refused, and why."""

    backend_id: str | None
    category: RejectionCategory
    reason: str


@dataclass(frozen=True, slots=True)
class PollResult:
    """A bulk status call's answer: believable reports and refused parts."""

    reports: list[StatusReport] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    detail: str = ""
    """How the backend answered (e.g. "40 read in full, 9,960 confirmed by the delta"), shown with the operation."""


@dataclass(frozen=True, slots=True)
class FetchResult:
    """Files an output fetch placed in the destination directory."""

    files: tuple[str, ...] = ()


StatusListener = Callable[[StatusReport], None]


class Backend(abc.ABC):
    """A place jobs run, seen through bulk status calls.

    Implementations never block the event loop: blocking clients go through a
    :class:`~monitor_core.backends.CallRunner` on threads or in a subprocess.
    """

    name: str
    capabilities: Capabilities

    def __init__(self, name: str, capabilities: Capabilities) -> None:
        self.name = name
        self.capabilities = capabilities
        self._listener: StatusListener | None = None

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Prepare connections or workers; called once before any other call."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections, workers and watchers."""

    def adopt(self, backend_id: str) -> None:  # noqa: B027 - optional hook
        """Take over a job that an earlier session of the monitor submitted."""

    def set_listener(self, listener: StatusListener | None) -> None:
        """Name the callback for changes the backend learns by itself (loop thread only)."""
        self._listener = listener

    def _report(self, report: StatusReport) -> None:
        if self._listener is not None:
            self._listener(report)

    @abc.abstractmethod
    async def submit(self, specs: Sequence[JobSpec]) -> list[str]:
        """Start jobs; return their backend ids, in order.

        Raises:
            BackendError: the submission failed.
        """

    @abc.abstractmethod
    async def poll(self, backend_ids: Sequence[str]) -> PollResult:
        """Ask for the status of a batch of at most ``max_batch`` jobs.

        Raises:
            BackendError: the call failed as a whole.
        """

    @abc.abstractmethod
    async def fetch_output(self, backend_id: str, destination: Path) -> FetchResult:
        """Copy a finished job's output files into ``destination`` (an empty directory).

        Raises:
            BackendError: the fetch failed and may be retried.
            OutputUnavailable: the output is gone for good.
        """

    async def kill(self, backend_id: str) -> None:
        """Stop a job.

        Raises:
            BackendError: the job could not be killed.
        """
        raise BackendError(f"{self.name} cannot kill jobs")
