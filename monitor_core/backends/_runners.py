"""Ways to call a backend's client without blocking the event loop.

* :class:`AsyncRunner` awaits an asyncio client directly.
* :class:`ThreadRunner` runs a blocking client's calls on the backend's own thread pool,
  so a hung backend only exhausts its own threads.
* :class:`ProcessRunner` runs a blocking client in subprocess workers, one call at a time
  each. A worker that dies mid-call is restarted and the call fails with
  :class:`WorkerDied` (retryable); a call that is cancelled (a timeout) kills its worker,
  because a hung client can only be stopped that way, and a fresh worker takes its place.
  A replacement that cannot be started (no memory, no processes left, the interpreter
  gone) is retried with backoff, logged and counted until it starts: a slot is never
  lost for good.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import json
import logging
import random
import struct
import subprocess
import sys
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from ._base import BackendError

__all__ = [
    "AsyncRunner",
    "CallRunner",
    "ProcessRunner",
    "RemoteError",
    "RunnerStatistics",
    "ThreadRunner",
    "WorkerDied",
    "read_frame",
    "write_frame",
]

log = logging.getLogger(__name__)

_HEADER: Final = struct.Struct(">I")
MAX_FRAME: Final = 64 * 1024 * 1024


class WorkerDied(BackendError):
    """The subprocess running the call ended before answering."""


class RemoteError(BackendError):
    """The client raised inside the worker; the message names the original exception."""


@dataclass(frozen=True, slots=True)
class RunnerStatistics:
    """How a runner's calls went."""

    calls: int
    restarts: int
    abandoned: int
    """Calls given up on while still running (threads cannot be stopped)."""
    respawn_failures: int = 0
    """Attempts to start a replacement worker that failed (each is retried)."""
    slots_empty: int = 0
    """Worker slots waiting for a replacement to start, now."""


class CallRunner(abc.ABC):
    """Runs ``client.method(*args)`` for a backend, off the event loop if it blocks."""

    def __init__(self) -> None:
        self._calls = 0
        self._restarts = 0
        self._abandoned = 0
        self._respawn_failures = 0
        self._slots_empty = 0

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Start threads or workers."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop threads or workers."""

    @abc.abstractmethod
    async def call(self, method: str, *args: Any) -> Any:
        """Call ``method`` on the client with JSON-able ``args``.

        Raises:
            BackendError: the call failed; the cause is chained.
        """

    def statistics(self) -> RunnerStatistics:
        """Counters since start."""
        return RunnerStatistics(self._calls, self._restarts, self._abandoned, self._respawn_failures, self._slots_empty)


class AsyncRunner(CallRunner):
    """Awaits an asyncio client's coroutine methods on the loop."""

    def __init__(self, client: Any) -> None:
        super().__init__()
        self._client = client

    async def call(self, method: str, *args: Any) -> Any:
        self._calls += 1
        return await getattr(self._client, method)(*args)

    async def close(self) -> None:
        closer = getattr(self._client, "aclose", None)
        if closer is not None:
            await closer()


class ThreadRunner(CallRunner):
    """Runs a blocking client's calls on a thread pool owned by one backend."""

    def __init__(self, client: Any, *, max_workers: int, name: str) -> None:
        super().__init__()
        self._client = client
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"monitor[{name}]")

    async def call(self, method: str, *args: Any) -> Any:
        self._calls += 1
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, functools.partial(getattr(self._client, method), *args))
        try:
            return await future
        except asyncio.CancelledError:
            # The thread keeps running until the client returns; only count it.
            self._abandoned += 1
            raise

    async def close(self) -> None:
        # Hung threads cannot be joined; do not wait for them.
        self._executor.shutdown(wait=False, cancel_futures=True)


def write_frame(stream: IO[bytes], message: Any) -> None:
    """Write one length-prefixed JSON frame to a blocking stream."""
    body = json.dumps(message, separators=(",", ":")).encode()
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


def read_frame(stream: IO[bytes]) -> Any | None:
    """Read one length-prefixed JSON frame from a blocking stream; ``None`` at its end.

    Raises:
        ValueError: the frame is larger than the limit or is not JSON.
    """
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes exceeds {MAX_FRAME}")
    body = stream.read(size)
    if len(body) < size:
        return None
    return json.loads(body)


def reply_to(request_id: Any, produce: Callable[[], Any]) -> dict[str, Any]:
    """A worker's reply frame to a request: the value ``produce`` returns, or the error it raised.

    Every failure goes back to the caller, its traceback to the worker's stderr.
    """
    try:
        return {"id": request_id, "ok": True, "value": produce()}
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
        traceback.print_exc(file=sys.stderr)
        return {"id": request_id, "ok": False, "error": f"{type(exc).__name__}: {exc}"}


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.next_id = 0

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def request(self, method: str, args: tuple[Any, ...]) -> Any:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.next_id += 1
        body = json.dumps({"id": self.next_id, "method": method, "args": args}).encode()
        self.process.stdin.write(_HEADER.pack(len(body)) + body)
        try:
            await self.process.stdin.drain()
            header = await self.process.stdout.readexactly(_HEADER.size)
            (size,) = _HEADER.unpack(header)
            if size > MAX_FRAME:
                raise WorkerDied(f"worker sent a frame of {size} bytes")
            reply = json.loads(await self.process.stdout.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError, json.JSONDecodeError) as exc:
            raise WorkerDied(f"worker pid {self.process.pid} ended mid-call") from exc
        if not isinstance(reply, dict) or reply.get("id") != self.next_id:
            raise WorkerDied("worker answered out of turn")
        if not reply.get("ok"):
            raise RemoteError(str(reply.get("error", "unknown error")))
        return reply.get("value")

    def kill(self) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()


class ProcessRunner(CallRunner):
    """Runs a blocking client in a pool of subprocess workers, restarting any that die.

    Args:
        factory: ``"package.module:callable"`` that builds the client in the worker.
        options: JSON-able keyword arguments for the factory.
        size: number of workers, i.e. calls in flight at once.
        name: the backend's name, for logs and task names.
        stderr: file that receives the workers' stderr (discarded when ``None``).
        python: the interpreter that runs the workers.
        respawn_backoff: first and longest wait, seconds, between attempts to replace a worker.
    """

    def __init__(
        self,
        factory: str,
        options: dict[str, Any],
        *,
        size: int,
        name: str,
        stderr: Path | None = None,
        python: str = sys.executable,
        respawn_backoff: tuple[float, float] = (0.2, 30.0),
    ) -> None:
        super().__init__()
        self._python = python
        self._respawn_backoff = respawn_backoff
        self._respawning: set[asyncio.Task[None]] = set()
        self._factory = factory
        self._options = options
        self._size = size
        self._name = name
        self._stderr_path = stderr
        self._stderr: IO[bytes] | None = None
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._workers: set[_Worker] = set()
        self._closed = False

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for tests and diagnostics)."""
        return [w.process.pid for w in self._workers if w.alive]

    async def start(self) -> None:
        if self._stderr_path is not None:
            self._stderr = self._stderr_path.open("ab")
        for _ in range(self._size):
            self._idle.put_nowait(await self._spawn())

    async def _spawn(self) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            self._python,
            "-m",
            "monitor_core.backends._worker_main",
            self._factory,
            json.dumps(self._options),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._stderr if self._stderr is not None else asyncio.subprocess.DEVNULL,
            limit=MAX_FRAME,
        )
        worker = _Worker(process)
        self._workers.add(worker)
        return worker

    async def _retire(self, worker: _Worker) -> None:
        worker.kill()
        self._workers.discard(worker)
        with contextlib.suppress(ProcessLookupError):
            await worker.process.wait()

    async def _replace(self, worker: _Worker) -> None:
        await self._retire(worker)
        if not self._closed:
            self._restarts += 1
            self._refill_slot()

    def _refill_slot(self) -> None:
        """Start a replacement worker in the background, however many attempts it takes."""
        self._slots_empty += 1
        task = asyncio.ensure_future(self._fill_slot())
        self._respawning.add(task)
        task.add_done_callback(self._respawning.discard)

    async def _fill_slot(self) -> None:
        first, cap = self._respawn_backoff
        delay = first
        try:
            while not self._closed:
                try:
                    worker = await self._spawn()
                except (OSError, ValueError, subprocess.SubprocessError) as exc:
                    self._respawn_failures += 1
                    log.error(
                        "%s: could not start a replacement worker (%s: %s); %d of %d slots empty, retrying in %.1f s",
                        self._name,
                        type(exc).__name__,
                        exc,
                        self._slots_empty,
                        self._size,
                        delay,
                    )
                    await asyncio.sleep(delay * random.uniform(0.75, 1.0))
                    delay = min(cap, delay * 2)
                    continue
                if self._closed:
                    await self._retire(worker)
                else:
                    if delay > first:
                        log.warning(
                            "%s: a replacement worker started after %d failures", self._name, self._respawn_failures
                        )
                    self._idle.put_nowait(worker)
                return
        finally:
            self._slots_empty -= 1

    async def call(self, method: str, *args: Any) -> Any:
        self._calls += 1
        worker = await self._idle.get()
        while not worker.alive:
            log.warning("%s: worker pid %d died while idle; restarting it", self._name, worker.process.pid)
            await self._retire(worker)
            self._restarts += 1
            self._refill_slot()
            worker = await self._idle.get()
        try:
            result = await worker.request(method, args)
        except asyncio.CancelledError:
            # Cancelled means timed out or shutting down: the worker may be stuck inside
            # the client, and killing it is the only way to get the slot back.
            log.info("%s: call %s abandoned; killing worker pid %d", self._name, method, worker.process.pid)
            replacement = asyncio.ensure_future(self._replace(worker))
            replacement.add_done_callback(_log_failure)
            raise
        except WorkerDied:
            log.warning("%s: worker pid %d died during %s; restarting it", self._name, worker.process.pid, method)
            await self._replace(worker)
            raise
        self._idle.put_nowait(worker)
        return result

    async def close(self) -> None:
        self._closed = True
        for task in list(self._respawning):
            task.cancel()
        for task in list(self._respawning):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for worker in list(self._workers):
            if worker.process.stdin is not None:
                worker.process.stdin.close()
        for worker in list(self._workers):
            try:
                await asyncio.wait_for(worker.process.wait(), timeout=2.0)
            except TimeoutError:
                await self._retire(worker)
        self._workers.clear()
        if self._stderr is not None:
            self._stderr.close()


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("restarting a worker failed", exc_info=task.exception())
