"""Clients of the simulated DIRAC service, and a handle on its server process.

:class:`DiracBlockingClient` behaves like DIRAC's own Python client: every call opens a
connection, blocks until the answer, and has no timeout of its own, so a hung service
hangs the caller. :class:`DiracAsyncClient` speaks the same protocol with asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from types import TracebackType
from typing import Any, Final

from ._dirac_service import DiracSimConfig

__all__ = ["DiracAsyncClient", "DiracBlockingClient", "DiracSimProcess"]

_MAX_ANSWER: Final = 64 * 1024 * 1024


def _request(method: str, params: Any) -> bytes:
    return json.dumps({"method": method, "params": params}).encode() + b"\n"


def _decode(line: bytes) -> dict[str, Any]:
    if not line.endswith(b"\n"):
        raise ValueError("connection closed before a complete answer")
    answer = json.loads(line)
    if not isinstance(answer, dict):
        raise ValueError("answer is not a JSON object")
    return answer


class DiracBlockingClient:
    """A blocking client, one connection per call, as DIRAC's RPC client.

    Every method returns the service's raw answer, ``{"OK": ..., "Value"/"Message": ...}``.

    Args:
        host: service address.
        port: service port.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port

    def call(self, method: str, params: Any = None) -> dict[str, Any]:
        """Send one request and wait, however long it takes, for its answer.

        Raises:
            OSError: the connection failed.
            ValueError: the answer is not valid JSON.
        """
        with socket.create_connection((self.host, self.port)) as connection:
            connection.sendall(_request(method, params))
            with connection.makefile("rb") as stream:
                return _decode(stream.readline(_MAX_ANSWER))

    def getJobStatus(self, job_ids: list[int]) -> dict[str, Any]:  # noqa: N802 - DIRAC's name
        """Bulk status of ``job_ids``."""
        return self.call("getJobStatus", job_ids)

    def getOutputSandbox(self, job_id: int) -> dict[str, Any]:  # noqa: N802 - DIRAC's name
        """Files of a finished job's output sandbox."""
        return self.call("getOutputSandbox", job_id)

    def submitJobs(self, specs: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N802 - DIRAC's name
        """Submit jobs; the answer's value is their ids."""
        return self.call("submitJobs", specs)

    def killJob(self, job_ids: list[int]) -> dict[str, Any]:  # noqa: N802 - DIRAC's name
        """Kill jobs."""
        return self.call("killJob", job_ids)


class DiracAsyncClient:
    """The asyncio flavour of :class:`DiracBlockingClient`, with the same methods."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port

    async def call(self, method: str, params: Any = None) -> dict[str, Any]:
        """Send one request and await its answer.

        Raises:
            OSError: the connection failed.
            ValueError: the answer is not valid JSON.
        """
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=_MAX_ANSWER)
        try:
            writer.write(_request(method, params))
            await writer.drain()
            return _decode(await reader.readline())
        finally:
            writer.close()

    async def getJobStatus(self, job_ids: list[int]) -> dict[str, Any]:  # noqa: N802 - DIRAC's name
        """Bulk status of ``job_ids``."""
        return await self.call("getJobStatus", job_ids)

    async def getOutputSandbox(self, job_id: int) -> dict[str, Any]:  # noqa: N802 - DIRAC's name
        """Files of a finished job's output sandbox."""
        return await self.call("getOutputSandbox", job_id)

    async def submitJobs(self, specs: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N802 - DIRAC's name
        """Submit jobs; the answer's value is their ids."""
        return await self.call("submitJobs", specs)

    async def killJob(self, job_ids: list[int]) -> dict[str, Any]:  # noqa: N802 - DIRAC's name
        """Kill jobs."""
        return await self.call("killJob", job_ids)


class DiracSimProcess:
    """The simulated service running as its own process on a loopback port.

    Use as ``async with DiracSimProcess(config) as service:``; ``service.port`` is its port.
    """

    def __init__(self, config: DiracSimConfig | None = None) -> None:
        self.config = config or DiracSimConfig()
        self.port = 0
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self._process is not None else None

    async def start(self) -> int:
        """Start the server and wait until it listens; return its port.

        Raises:
            RuntimeError: the server did not come up.
        """
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "monitor_core.sim.dirac_server",
            "--config",
            json.dumps(self.config.to_dict()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), timeout=30)
        if not line:
            raise RuntimeError("the simulated DIRAC service did not start")
        self.port = int(json.loads(line)["port"])
        return self.port

    async def stop(self) -> None:
        """Stop the server (closing its stdin ends it)."""
        if self._process is None or self._process.returncode is not None:
            return
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            await asyncio.wait_for(self._process.wait(), timeout=5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()

    def client(self) -> DiracAsyncClient:
        """An asyncio client of this server, e.g. to reconfigure faults at run time."""
        return DiracAsyncClient(port=self.port)

    async def __aenter__(self) -> DiracSimProcess:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
