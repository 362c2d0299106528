"""The simulated DIRAC service with a grid that runs real jobs, on a real TCP socket.

It answers everything the simulated service answers (``getJobStatus``, ``getOutputSandbox``,
``submitJobs``, ``killJob``, ``configure``, ``stats``, with the same latency and faults),
plus the calls DIRAC's client API makes for a job described by a script:

* ``submitJob`` (a job description with its input sandbox as a base64 tarball) -> DIRAC id;
  the job waits in the queue, then runs as a local process (:mod:`._grid_jobs`);
* ``getJobLoggingInfo``, ``getJobParameters``, ``getJobAttributes``, ``getJobCPUTime``,
  ``peekJob``;
* ``downloadSandbox`` -> the output sandbox as a base64 tarball of real files (slow by
  ``output_latency``, and hung or failed like status calls when so configured);
* ``deleteJob``, ``reschedule``; ``jobTimes`` (when each job became final, for benchmarks).

Run it as its own process with ``python -m monitor_core.sim.dirac_grid --workdir DIR``; it
prints ``{"port": N}`` once it listens and serves until its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import IO, Any, Final

from ._dirac_client import DiracBlockingClient
from ._dirac_service import DiracSimConfig, DiracSimService, ServiceError
from ._grid_jobs import GridConfig, GridJobs
from .dirac_server import DiracSimServer

__all__ = ["FIRST_GRID_ID", "DiracGridProcess", "DiracGridServer", "GridConfig", "main"]

FIRST_GRID_ID: Final = 5_000_001
"""Grid jobs get ids from here, apart from the simulated service's own jobs."""
_FAULTY: Final = frozenset({"downloadSandbox"})


class _GridService(DiracSimService):
    """The simulated service's job database, with the grid's real jobs in it too."""

    def __init__(self, config: DiracSimConfig, clock: Any, grid: GridJobs) -> None:
        super().__init__(config, clock)
        self.grid = grid
        self._next_grid_id = FIRST_GRID_ID

    def submit_described(self, description: dict[str, Any]) -> int:
        job_id = self._next_grid_id
        self.grid.submit(job_id, description)
        self._next_grid_id += 1
        return job_id

    def get_job_status(self, ids: list[int]) -> dict[str, dict[str, str]]:
        if len(ids) > self.config.max_bulk:
            raise ServiceError(f"Too many job IDs: {len(ids)} > {self.config.max_bulk}")
        grid_ids = [int(i) for i in ids if int(i) in self.grid]
        answer = super().get_job_status([i for i in ids if int(i) not in self.grid]) if len(grid_ids) < len(ids) else {}
        for job_id in grid_ids:
            answer[str(job_id)] = self.grid.status(job_id)
        return answer

    def kill(self, ids: list[int]) -> None:
        self.grid.kill(ids)
        super().kill([i for i in ids if int(i) not in self.grid])

    def output_sandbox(self, job_id: int) -> dict[str, str]:
        if int(job_id) not in self.grid:
            return super().output_sandbox(job_id)
        with tarfile.open(fileobj=io.BytesIO(self.grid.output_sandbox(job_id)), mode="r:gz") as archive:
            return {
                member.name: stream.read().decode(errors="replace")
                for member in archive.getmembers()
                if (stream := archive.extractfile(member)) is not None
            }


class DiracGridServer(DiracSimServer):
    """The simulated service plus a grid running real jobs, on a loopback TCP port.

    Args:
        config: the service's latency and faults.
        grid: the grid's queue and slots.
        workdir: where jobs run.
        host: where to listen (loopback).
        port: TCP port, 0 for a free one.
    """

    def __init__(
        self, config: DiracSimConfig, grid: GridConfig, workdir: Path, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        super().__init__(config, host=host, port=port)
        self.grid = GridJobs(grid, workdir)
        self._grid_service = _GridService(config, time.monotonic, self.grid)
        self.service = self._grid_service

    async def start(self) -> int:
        port = await super().start()
        self.grid.start()
        return port

    async def close(self) -> None:
        await super().close()
        await self.grid.close()

    def statistics(self) -> dict[str, Any]:
        return {**super().statistics(), **self.grid.statistics()}

    async def _dispatch(self, method: str, params: Any) -> bytes:
        handler = getattr(self, f"_grid_{method}", None)
        if handler is None:
            return await super()._dispatch(method, params)
        if method in _FAULTY and (
            fault := await self.injected_fault("Failed to connect to SandboxStore: Connection reset")
        ):
            return fault
        try:
            value = await handler(params)
        except ServiceError as exc:
            return _encode({"OK": False, "Message": str(exc)})
        except (TypeError, ValueError, KeyError) as exc:
            return _encode({"OK": False, "Message": f"bad parameters: {exc}"})
        return _encode({"OK": True, "Value": value})

    async def _latency(self) -> None:
        await asyncio.sleep(self.service.draw_latency(0))

    async def _grid_submitJob(self, params: Any) -> int:  # noqa: N802 - DIRAC's name
        await asyncio.sleep(self.service.draw_latency(0) / 4)
        if not isinstance(params, dict):
            raise ServiceError("submitJob takes a job description")
        return self._grid_service.submit_described(params)

    async def _grid_getJobLoggingInfo(self, params: Any) -> list[tuple[str, str, str, str, str]]:  # noqa: N802
        await self._latency()
        return self.grid.logging_info(params)

    async def _grid_getJobParameters(self, params: Any) -> dict[str, Any]:  # noqa: N802
        await self._latency()
        return self.grid.parameters(params)

    async def _grid_getJobAttributes(self, params: Any) -> dict[str, Any]:  # noqa: N802
        await self._latency()
        return self.grid.attributes(params)

    async def _grid_getJobCPUTime(self, params: Any) -> float:  # noqa: N802
        await self._latency()
        return self.grid.cpu_time(params)

    async def _grid_peekJob(self, params: Any) -> str:  # noqa: N802
        await self._latency()
        return self.grid.peek(params)

    async def _grid_downloadSandbox(self, params: Any) -> str:  # noqa: N802
        await asyncio.sleep(self.service.config.output_latency)
        return base64.b64encode(self.grid.output_sandbox(params)).decode()

    async def _grid_deleteJob(self, params: Any) -> list[int]:  # noqa: N802
        return self.grid.kill(list(params), status="Deleted")

    async def _grid_killJob(self, params: Any) -> list[int]:  # noqa: N802
        ids = list(params)
        self.service.kill(ids)
        return [int(i) for i in ids]

    async def _grid_reschedule(self, params: Any) -> list[int]:
        return self.grid.reschedule(list(params))

    async def _grid_jobTimes(self, params: Any) -> dict[str, dict[str, Any]]:  # noqa: N802
        return self.grid.times()


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


class DiracGridProcess:
    """The grid service as its own process, started and stopped from synchronous code.

    Use as ``with DiracGridProcess(workdir, config, grid) as service:``; ``service.address``
    is its ``host:port`` and ``service.client()`` a blocking client of it.
    """

    def __init__(
        self,
        workdir: Path,
        config: DiracSimConfig | None = None,
        grid: GridConfig | None = None,
        *,
        log: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.config = config or DiracSimConfig()
        self.grid = grid or GridConfig()
        self.port = 0
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None
        self._log_stream: IO[bytes] | None = None

    @property
    def address(self) -> str:
        """``host:port`` of the service."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> str:
        """Start the server and wait until it listens; return its address.

        Raises:
            RuntimeError: the server did not come up.
        """
        self._log_stream = self._log.open("ab") if self._log is not None else None
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "monitor_core.sim.dirac_grid",
                "--workdir",
                str(self.workdir),
                "--config",
                json.dumps(self.config.to_dict()),
                "--grid",
                json.dumps(self.grid.to_dict()),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_stream if self._log_stream is not None else subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": _python_path()},
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("the simulated DIRAC grid did not start")
        self.port = int(json.loads(line)["port"])
        return self.address

    def client(self) -> DiracBlockingClient:
        """A blocking client of the service (to reconfigure faults, read statistics)."""
        return DiracBlockingClient(port=self.port)

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change the service's latency or faults at run time; its new config."""
        answer = self.client().call("configure", changes)
        if not answer.get("OK"):
            raise RuntimeError(str(answer.get("Message")))
        value: dict[str, Any] = answer["Value"]
        return value

    def statistics(self) -> dict[str, Any]:
        """The service's statistics (calls, faults, grid jobs, sandbox downloads per job)."""
        answer = self.client().call("stats")
        value: dict[str, Any] = answer["Value"]
        return value

    def job_times(self) -> dict[str, dict[str, Any]]:
        """Each grid job's status and the wall times it started, ended and became final."""
        answer = self.client().call("jobTimes")
        value: dict[str, dict[str, Any]] = answer["Value"]
        return value

    def stop(self) -> None:
        """Stop the server (closing its stdin ends it) and every job still running."""
        process = self._process
        if process is not None and process.poll() is None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log_stream is not None:
            self._log_stream.close()
            self._log_stream = None

    def __enter__(self) -> DiracGridProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _python_path() -> str:
    # The server imports this project, wherever the caller found it.
    project = str(Path(__file__).resolve().parents[2])
    return os.pathsep.join(filter(None, [project, os.environ.get("PYTHONPATH")]))


async def _serve_until_stdin_closes(server: DiracGridServer) -> None:
    bound = await server.start()
    print(json.dumps({"port": bound}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while await reader.read(4096):
            pass
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: serve the grid until stdin closes."""
    parser = argparse.ArgumentParser(prog="python -m monitor_core.sim.dirac_grid")
    parser.add_argument("--workdir", type=Path, required=True, help="where jobs run")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--config", default="{}", help="DiracSimConfig fields as JSON")
    parser.add_argument("--grid", default="{}", help="GridConfig fields as JSON")
    args = parser.parse_args(argv)
    server = DiracGridServer(
        DiracSimConfig(**json.loads(args.config)), GridConfig(**json.loads(args.grid)), args.workdir, port=args.port
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_stdin_closes(server))
    return 0


if __name__ == "__main__":
    sys.exit(main())
