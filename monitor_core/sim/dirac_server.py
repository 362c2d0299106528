"""The simulated DIRAC service on a real TCP socket, with its latency and its faults.

One JSON request per line, one JSON answer per line, in DIRAC's ``S_OK``/``S_ERROR``
shape: ``{"OK": true, "Value": ...}`` or ``{"OK": false, "Message": "..."}``. Calls
are slow (a drawn latency that grows with the batch), may fail, may hang, and may
carry a malformed entry, as configured; ``configure`` changes that at run time.

Run it as its own process with ``python -m monitor_core.sim.dirac_server``; it prints
``{"port": N}`` once it listens and serves until its stdin closes.

With ``--state-dir DIR`` it is a grid that outlives the session using it, as a real one
does: it does not watch its stdin, it writes its pid, start time and port to
``DIR/grid.json`` once it listens, and it stops by itself after ``--idle-exit`` seconds
without a request (or on SIGTERM), removing that file. It also journals every job it
accepts or kills to ``DIR/jobs.jsonl`` and reads that journal back when it starts, so a
grid started again on the same directory still knows every job (and where each one's
timeline has got to in the meantime).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

from .._files import write_whole
from ._dirac_service import DiracSimConfig, DiracSimService, ServiceError

__all__ = ["DiracSimServer", "main"]

log = logging.getLogger(__name__)

MAX_REQUEST: Final = 16 * 1024 * 1024
_FAULTY_METHODS: Final = frozenset({"getJobStatus", "getOutputSandbox"})


class DiracSimServer:
    """Serves a :class:`DiracSimService` on a loopback TCP port.

    Args:
        config: the service's behaviour.
        host: where to listen (loopback).
        port: TCP port, 0 for a free one.
    """

    def __init__(
        self, config: DiracSimConfig, *, host: str = "127.0.0.1", port: int = 0, journal: Path | None = None
    ) -> None:
        self.service = DiracSimService(config, time.monotonic)
        self.journal = journal
        """Where accepted and killed jobs are appended (JSON lines), or ``None``."""
        if journal is not None:
            try:
                self.restored = self.service.restore(_read_journal(journal), time.time())
            except ServiceError as exc:
                log.error("journal %s: %s; going on with the jobs read before it", journal, exc)
                self.restored = len(self.service)
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.calls: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.ids_queried = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.last_request = time.monotonic()
        """When the latest request arrived (for stopping when idle)."""
        if journal is None:
            self.restored = 0

    @property
    def port(self) -> int:
        """The port it listens on (after :meth:`start`)."""
        return self._port

    async def start(self) -> int:
        """Listen; return the port."""
        self._server = await asyncio.start_server(self._serve, self._host, self._port, limit=MAX_REQUEST)
        self._port = self._server.sockets[0].getsockname()[1]
        return self._port

    async def close(self) -> None:
        """Stop listening and drop every connection, hung ones included."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    def statistics(self) -> dict[str, Any]:
        """Calls by method, faults injected, ids queried, peak concurrent calls."""
        return {
            "calls": dict(self.calls),
            "faults": dict(self.faults),
            "ids_queried": self.ids_queried,
            "max_in_flight": self.max_in_flight,
            "jobs": len(self.service),
            "restored": self.restored,
        }

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while line := await reader.readline():
                reply = await self._answer(line)
                writer.write(reply if reply.endswith(b"\n") else reply + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        except asyncio.CancelledError:
            # Only close() cancels these. Ending normally keeps Python 3.11's stream
            # callback from logging the cancellation of a task it does not own as an error.
            return
        finally:
            self._connections.discard(task)
            writer.close()

    async def _answer(self, line: bytes) -> bytes:
        try:
            request = json.loads(line)
            method, params = request["method"], request.get("params", [])
        except (ValueError, KeyError, TypeError):
            return _encode({"OK": False, "Message": "malformed request"})
        self.calls[method] += 1
        self.last_request = time.monotonic()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._dispatch(method, params)
        finally:
            self.in_flight -= 1

    async def injected_fault(self, failure: str) -> bytes | None:
        """Hang or fail this call as the configured fault rates say; ``None`` when it goes through."""
        service, config = self.service, self.service.config
        draw = service.draw()
        if draw < config.hang_rate:
            self.faults["hang"] += 1
            await asyncio.sleep(config.hang_seconds)
            return _encode({"OK": False, "Message": "Request timed out at the server"})
        if draw < config.hang_rate + config.error_rate:
            self.faults["error"] += 1
            await asyncio.sleep(service.draw_latency(0))
            return _encode({"OK": False, "Message": failure})
        return None

    async def _dispatch(self, method: str, params: Any) -> bytes:
        service, config = self.service, self.service.config
        if method in _FAULTY_METHODS and (
            fault := await self.injected_fault("Failed to connect to JobMonitoring: Connection reset")
        ):
            return fault
        try:
            if method == "getJobStatus":
                ids = list(params)
                self.ids_queried += len(ids)
                await asyncio.sleep(service.draw_latency(len(ids)))
                value: Any = service.get_job_status(ids)
                if value and service.draw() < config.garbage_rate:
                    self.faults["garbage"] += 1
                    return _garble(value, kind=self.faults["garbage"] % 3)
            elif method == "getOutputSandbox":
                await asyncio.sleep(config.output_latency)
                value = service.output_sandbox(int(params))
            elif method == "submitJobs":
                await asyncio.sleep(service.draw_latency(0) / 4)
                value = service.submit(list(params))
                self._write_journal(value)
            elif method == "killJob":
                service.kill(list(params))
                self._write_journal(list(params))
                value = None
            elif method == "configure":
                service.config = dataclasses.replace(config, **dict(params))
                value = service.config.to_dict()
            elif method == "stats":
                value = self.statistics()
            elif method == "ping":
                value = "pong"
            else:
                return _encode({"OK": False, "Message": f"unknown method {method}"})
        except ServiceError as exc:
            return _encode({"OK": False, "Message": str(exc)})
        except (TypeError, ValueError) as exc:
            return _encode({"OK": False, "Message": f"bad parameters: {exc}"})
        return _encode({"OK": True, "Value": value})

    def _write_journal(self, ids: list[int]) -> None:
        # Written before the answer goes out: a job the client was told of is on disk.
        if self.journal is None or not ids:
            return
        lines = "".join(json.dumps(record) + "\n" for record in self.service.records(ids, time.time()))
        with self.journal.open("a") as stream:
            stream.write(lines)


def _read_journal(path: Path) -> list[dict[str, Any]]:
    """The journal's records; a line cut short by a crash ends it."""
    records: list[dict[str, Any]] = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        return records
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            break
        if isinstance(record, dict):
            records.append(record)
    return records


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def _garble(value: dict[str, dict[str, str]], *, kind: int) -> bytes:
    # Take turns among the kinds of nonsense a real service has been seen to send, starting
    # with answers that parse, so that even a run with one garbled answer has a job to reject.
    victim = next(iter(value))
    if kind == 1:
        value[victim] = {"Status": "Borked", "MinorStatus": "?"}
    elif kind == 2:
        value[victim] = "Running"  # type: ignore[assignment]
    else:
        return _encode({"OK": True, "Value": value})[: -len(victim)]
    return _encode({"OK": True, "Value": value})


async def _serve_until_stdin_closes(config: DiracSimConfig, port: int) -> None:
    server = DiracSimServer(config, port=port)
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


GRID_FILE: Final = "grid.json"


def _process_start_time(pid: int) -> float:
    """The kernel's start time of a process, the same figure psutil gives."""
    import psutil  # only the detached grid needs it

    return float(psutil.Process(pid).create_time())


async def _serve_until_idle(config: DiracSimConfig, port: int, state_dir: Path, idle_exit: float) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - before serving anything
    server = DiracSimServer(config, port=port, journal=state_dir / "jobs.jsonl")
    if server.restored:
        log.info("took back %d jobs from the journal", server.restored)
    bound = await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    grid_file = _announce(state_dir, bound, server.restored)
    log.info("simulated grid pid %d listening on port %d", os.getpid(), bound)
    try:
        while not stop.is_set():
            idle = time.monotonic() - server.last_request
            if server.in_flight == 0 and idle >= idle_exit:
                log.info("no request for %.0f s: stopping", idle)
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.05, min(1.0, idle_exit - idle)))
    finally:
        _withdraw(grid_file)
        await server.close()


def _announce(state_dir: Path, port: int, restored: int) -> Path:
    """Write who and where this grid is, and how many jobs it took back, for a session to find."""
    grid_file = state_dir / GRID_FILE
    me = {"pid": os.getpid(), "started": _process_start_time(os.getpid()), "port": port, "restored": restored}
    write_whole(grid_file, json.dumps(me))
    return grid_file


def _withdraw(grid_file: Path) -> None:
    """Remove the grid's file, unless a newer grid has written its own."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(grid_file.read_text()).get("pid") == os.getpid():
            grid_file.unlink()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: serve until stdin closes, or as a detached grid until idle."""
    parser = argparse.ArgumentParser(prog="python -m monitor_core.sim.dirac_server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--config", default="{}", help="DiracSimConfig fields as JSON")
    parser.add_argument("--state-dir", type=Path, default=None, help="run detached; write grid.json here")
    parser.add_argument("--idle-exit", type=float, default=300.0, help="detached: stop after this many idle seconds")
    args = parser.parse_args(argv)
    config = DiracSimConfig(**json.loads(args.config))
    if args.state_dir is not None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        asyncio.run(_serve_until_idle(config, args.port, args.state_dir, args.idle_exit))
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_stdin_closes(config, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
