"""The ``dirac-sim`` backend: the simulated DIRAC service through a real client.

The service's own client blocks, as DIRAC's does, so by default it runs isolated in
subprocess workers (``DiracSimBackend.isolated``); ``threaded`` runs it on threads and
``asynchronous`` uses the asyncio client, for comparison. Answers are validated here,
in the monitor's process, whichever way the call was made.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from .._model import JobSpec
from ..sim._dirac_client import DiracAsyncClient, DiracBlockingClient
from ..sim._dirac_service import DIRAC_STATUS_MAPPING
from ._base import (
    Backend,
    BackendError,
    Capabilities,
    FetchResult,
    MalformedAnswer,
    OutputUnavailable,
    PollResult,
    Rejection,
    StatusReport,
)
from ._runners import AsyncRunner, CallRunner, ProcessRunner, ThreadRunner

__all__ = ["DEFAULT_CAPABILITIES", "DiracSimBackend", "parse_status_answer"]

# Sized so that the service's allowance, not our slots, bounds a 100,000-job session. A call for
# 500 jobs takes 0.5 s at the median (0.3 s plus 0.4 ms a job), and up to twice that while the
# service is busiest; 90,000 jobs submitted together come due together, and their sweep of 180
# calls must end within one interval (10 s): 16 in flight do it in about 6 s, where 8 took 14 s
# (status lag p99 13.8 s against 10.2 s, measured). 180 calls in 6 s stay within the allowance
# (50 a second), and 12 fetch slots of 0.2 s can use what status calls leave of it.
DEFAULT_CAPABILITIES: Final = Capabilities(
    max_batch=500,
    max_concurrency=16,
    fetch_concurrency=12,
    blocking=True,
    isolated=True,
    poll_interval=10.0,
    call_timeout=20.0,
    max_calls_per_minute=3000.0,
)
_SUBMIT_CHUNK: Final = 1000
_CLIENT_FACTORY: Final = "monitor_core.sim._dirac_client:DiracBlockingClient"


def _value(answer: Any, what: str) -> Any:
    """Unwrap DIRAC's ``S_OK``/``S_ERROR``."""
    if not isinstance(answer, dict) or not isinstance(answer.get("OK"), bool):
        raise MalformedAnswer(f"{what}: answer is not an S_OK/S_ERROR structure")
    if not answer["OK"]:
        raise BackendError(f"{what}: {answer.get('Message', 'S_ERROR without a message')}")
    return answer.get("Value")


def parse_status_answer(requested: Sequence[str], answer: Any) -> PollResult:
    """Turn a ``getJobStatus`` answer into reports, refusing what does not make sense.

    Raises:
        BackendError: the service answered S_ERROR.
        MalformedAnswer: the answer as a whole is not understood.
    """
    value = _value(answer, "getJobStatus")
    if not isinstance(value, dict):
        raise MalformedAnswer("getJobStatus: value is not a mapping of job ids")
    result = PollResult()
    reports = result.reports
    wanted = set(requested)
    # A handful of distinct words, said of every job on every poll: one copy each, not one a job.
    infos: dict[tuple[str, str], str] = {}
    for key, entry in value.items():
        if key not in wanted:
            result.rejections.append(Rejection(str(key), "garbage", "answer names a job that was not asked for"))
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("Status"), str):
            result.rejections.append(Rejection(key, "garbage", f"entry is not a status record: {entry!r:.80}"))
            continue
        native = entry["Status"]
        status = DIRAC_STATUS_MAPPING.get(native)
        if status is None:
            result.rejections.append(Rejection(key, "unknown_state", f"unknown DIRAC status {native!r:.40}"))
            continue
        minor = entry.get("MinorStatus")
        minor = minor if isinstance(minor, str) else ""
        info = infos.get((native, minor))
        if info is None:
            info = infos[native, minor] = sys.intern(f"{native}: {minor}" if minor else native)
        reports.append(StatusReport(key, status, info))
    for missing in wanted.difference(value):
        result.rejections.append(Rejection(missing, "unknown_job", "the service does not know this job"))
    return result


class DiracSimBackend(Backend):
    """Jobs on the simulated DIRAC grid.

    Args:
        runner: how the client is called (subprocess, threads or asyncio).
        name: the backend's name on the bus.
        capabilities: limits; ``blocking`` and ``isolated`` should match the runner.
    """

    def __init__(self, runner: CallRunner, *, name: str = "dirac-sim", capabilities: Capabilities) -> None:
        super().__init__(name, capabilities)
        self.runner = runner

    @classmethod
    def isolated(
        cls,
        port: int,
        *,
        name: str = "dirac-sim",
        capabilities: Capabilities = DEFAULT_CAPABILITIES,
        stderr: Path | None = None,
    ) -> DiracSimBackend:
        """The blocking client in subprocess workers, one per call slot."""
        caps = replace(capabilities, blocking=True, isolated=True)
        runner = ProcessRunner(
            _CLIENT_FACTORY,
            {"host": "127.0.0.1", "port": port},
            size=caps.max_concurrency + caps.fetch_concurrency,
            name=name,
            stderr=stderr,
        )
        return cls(runner, name=name, capabilities=caps)

    @classmethod
    def threaded(
        cls, port: int, *, name: str = "dirac-sim", capabilities: Capabilities = DEFAULT_CAPABILITIES
    ) -> DiracSimBackend:
        """The blocking client on a thread pool of this backend's own."""
        caps = replace(capabilities, blocking=True, isolated=False)
        runner = ThreadRunner(
            DiracBlockingClient(port=port), max_workers=caps.max_concurrency + caps.fetch_concurrency, name=name
        )
        return cls(runner, name=name, capabilities=caps)

    @classmethod
    def asynchronous(
        cls, port: int, *, name: str = "dirac-sim-async", capabilities: Capabilities = DEFAULT_CAPABILITIES
    ) -> DiracSimBackend:
        """The asyncio client, on the loop."""
        caps = replace(capabilities, blocking=False, isolated=False)
        return cls(AsyncRunner(DiracAsyncClient(port=port)), name=name, capabilities=caps)

    async def start(self) -> None:
        await self.runner.start()

    async def close(self) -> None:
        await self.runner.close()

    async def _call(self, method: str, *args: Any) -> Any:
        try:
            return await self.runner.call(method, *args)
        except (OSError, ValueError) as exc:
            raise BackendError(f"{method}: {type(exc).__name__}: {exc}") from exc

    async def submit(self, specs: Sequence[JobSpec]) -> list[str]:
        ids: list[str] = []
        for start in range(0, len(specs), _SUBMIT_CHUNK):
            chunk = specs[start : start + _SUBMIT_CHUNK]
            payload = [
                {"name": s.name, "duration": s.duration, "outcome": "done" if s.exit_code == 0 else "failed"}
                for s in chunk
            ]
            value = _value(await self._call("submitJobs", payload), "submitJobs")
            if not isinstance(value, list) or len(value) != len(chunk):
                raise MalformedAnswer("submitJobs: expected one id per job")
            ids.extend(str(v) for v in value)
        return ids

    async def poll(self, backend_ids: Sequence[str]) -> PollResult:
        numeric = []
        for backend_id in backend_ids:
            if not backend_id.isdigit():
                raise BackendError(f"not a DIRAC job id: {backend_id!r}")
            numeric.append(int(backend_id))
        return parse_status_answer(backend_ids, await self._call("getJobStatus", numeric))

    async def fetch_output(self, backend_id: str, destination: Path) -> FetchResult:
        try:
            value = _value(await self._call("getOutputSandbox", int(backend_id)), "getOutputSandbox")
        except MalformedAnswer:
            raise
        except BackendError as exc:
            if "No such job" in str(exc):
                raise OutputUnavailable(str(exc)) from exc
            raise
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise MalformedAnswer("getOutputSandbox: expected a mapping of file names to text")
        return await asyncio.to_thread(_write_files, destination, value)

    async def kill(self, backend_id: str) -> None:
        _value(await self._call("killJob", [int(backend_id)]), "killJob")


def _write_files(destination: Path, files: dict[str, str]) -> FetchResult:
    names = []
    for name, text in files.items():
        safe = Path(name).name
        if not safe or safe in (".", ".."):
            continue
        (destination / safe).write_text(text)
        names.append(safe)
    return FetchResult(tuple(names))
