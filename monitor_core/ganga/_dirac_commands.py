"""The DIRAC commands of Ganga's completion path, answered by drive mode's own DIRAC client process.

Ganga's finalisation of a Dirac job (``DiracBase._internal_job_finalisation``) asks its DIRAC
executor process for several commands one after another: the state times of ``running`` and
``completing`` (each reads the job's logging records), then ``finished_job`` (CPU time, output
sandbox download, attributes, output data, the ``completed`` time). The executor puts each
answer in shared memory that Ganga looks at every 0.3 s, so each command costs at least one
such look, and it runs at most a handful of commands at once.

In drive mode the finalisation runs on the lane's worker threads, and there
:func:`route_finalisation_commands` sends the commands it asks of Ganga's ``AsyncDiracManager``
to a :class:`DiracCommandClient` instead: one process in the DIRAC environment
(``python -m monitor_core.ganga._dirac_worker``) runs Ganga's own command functions, each on
a thread of its own, and each answer comes back as soon as it is ready. Ganga's code still
makes every decision; only the way its DIRAC commands travel changes. Commands of any other
thread, or for another DIRAC environment or proxy, go Ganga's own way.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Final

from ..backends._base import BackendError
from ..backends._runners import read_frame, write_frame
from ._dirac_worker import decode, encode

__all__ = ["DiracCommandClient", "route_finalisation_commands"]

log = logging.getLogger(__name__)

_PACKAGE_ROOT: Final = str(Path(__file__).resolve().parents[2])
_BROKEN_RUNS: Final = 3


class DiracCommandClient:
    """A process running Ganga's DIRAC commands in the DIRAC environment, many at once (thread-safe).

    The process is started on first use and again after it dies; a command in flight when it
    dies fails (Ganga's finalisation then fails, and the lane tries it again). Like Ganga's own
    executor, a command has no time limit: a finalisation the lane gave up on is waited for,
    so that a job's output is downloaded once.

    Args:
        env_json: ``[DIRAC]DiracEnvJSON``.
        proxy: the proxy file DIRAC's client presents.
        name: the lane's name, for logs.
    """

    def __init__(self, env_json: str, proxy: str, *, name: str) -> None:
        self.env_json = env_json
        self.proxy = proxy
        self._name = name
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._pending: dict[int, tuple[subprocess.Popen[bytes], concurrent.futures.Future[Any]]] = {}
        """Commands awaiting their answer, with the process running each."""
        self._ids = itertools.count(1)
        self._closed = False
        self.restarts = 0
        self._broken_runs = 0
        """Processes in a row that ended without answering a command they were given."""

    @property
    def usable(self) -> bool:
        """Whether commands should come here.

        ``False`` once three processes in a row ended without answering (DIRAC's client cannot
        run there): Ganga's executor takes over.
        """
        return self._broken_runs < _BROKEN_RUNS

    def start(self) -> None:
        """Start the process now rather than on the first command (blocking)."""
        with self._lock:
            self._ensure_process()

    def run(self, command: Any, arguments: dict[str, Any]) -> concurrent.futures.Future[Any]:
        """Run a module-level DIRAC command of Ganga's (``GangaDirac.Lib.Server.*``) as its executor would.

        Returns:
            A future of the command's answer (DIRAC's ``S_OK``/``S_ERROR`` dict, as Ganga's executor returns it).
        """
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            request = {"op": "run", "file": _command_file(command), "name": command.__name__, "args": encode(arguments)}
        except (TypeError, ValueError) as exc:
            future.set_exception(BackendError(f"DIRAC command {getattr(command, '__name__', command)!r}: {exc}"))
            return future
        with self._lock:
            try:
                process = self._ensure_process()
                assert process.stdin is not None
                request["id"] = call_id = next(self._ids)
                self._pending[call_id] = (process, future)
                write_frame(process.stdin, request)
            except (OSError, ValueError) as exc:
                if isinstance(exc, OSError):
                    self._broken_runs += 1  # the process ended before it read its command
                self._pending.pop(request.get("id", 0), None)
                future.set_exception(BackendError(f"{self._name}: DIRAC command process unavailable: {exc}"))
        return future

    def prefetch(self, jobs: Iterable[tuple[int, bool]]) -> None:
        """Have a final job's records read now, for its finalisation (``True``: the job completed).

        Does nothing while the process is not running: the loop's thread never starts one.
        """
        self._send({"op": "prefetch", "jobs": [[job_id, completed] for job_id, completed in jobs]})

    def release(self, job_ids: Iterable[int]) -> None:
        """Forget the records read for these jobs (their finalisation ended)."""
        self._send({"op": "release", "jobs": list(job_ids)})

    def close(self) -> None:
        """Stop the process; commands still in flight fail."""
        with self._lock:
            self._closed = True
            process, self._process = self._process, None
        if process is not None:
            _stop(process)

    def _send(self, message: dict[str, Any]) -> None:
        with self._lock:
            process = self._process
            if process is None or process.poll() is not None or process.stdin is None:
                return
            with contextlib.suppress(OSError, ValueError):
                write_frame(process.stdin, message)

    def _ensure_process(self) -> subprocess.Popen[bytes]:
        """The running process, starting one if there is none (under the lock)."""
        if self._closed:
            raise ValueError("the client is closed")
        process = self._process
        if process is None or process.poll() is not None:
            if process is not None:
                self.restarts += 1
                log.warning("%s: DIRAC command process pid %d ended; starting another", self._name, process.pid)
            python_path = os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
            process = subprocess.Popen(
                [sys.executable, "-m", "monitor_core.ganga._dirac_worker", self.env_json, self.proxy],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": python_path},
            )
            self._process = process
            threading.Thread(
                target=self._read_replies, args=(process,), name=f"ganga-monitor[{self._name}] commands", daemon=True
            ).start()
        return process

    def _read_replies(self, process: subprocess.Popen[bytes]) -> None:
        """Hand each answer to its caller as it arrives; fail the rest when the process ends."""
        assert process.stdout is not None
        answered = 0
        try:
            for reply in _frames(process.stdout):
                if not isinstance(reply, dict):
                    continue
                answered += 1
                with self._lock:
                    entry = self._pending.pop(reply.get("id", 0), None)
                if entry is None or entry[1].done():
                    continue
                _answer(entry[1], reply)
        finally:
            with self._lock:
                if self._process is process:
                    self._process = None
                lost = [future for runner, future in self._pending.values() if runner is process]
                self._pending = {call_id: entry for call_id, entry in self._pending.items() if entry[0] is not process}
                if answered:
                    self._broken_runs = 0
                elif lost and not self._closed:
                    self._broken_runs += 1
                    if not self.usable:
                        log.error(
                            "%s: DIRAC's client does not run in its command process; Ganga's executor takes over",
                            self._name,
                        )
            _stop(process)
            for future in lost:
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    future.set_exception(BackendError(f"{self._name}: DIRAC command process ended mid-command"))


def _answer(future: concurrent.futures.Future[Any], reply: dict[str, Any]) -> None:
    # A caller that stopped waiting may have cancelled its future meanwhile.
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        if not reply.get("ok"):
            future.set_exception(BackendError(f"DIRAC command failed: {reply.get('error')}"))
            return
        try:
            value = decode(reply.get("value"))
        except ValueError as exc:
            future.set_exception(BackendError(f"garbled answer from DIRAC's client: {exc}"))
            return
        future.set_result(value)


def _frames(stream: IO[bytes]) -> Iterator[Any]:
    while True:
        try:
            frame = read_frame(stream)
        except (OSError, ValueError):
            return
        if frame is None:
            return
        yield frame


def _stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError, ValueError):
        if process.stdin is not None:
            process.stdin.close()
    try:
        process.wait(timeout=2.0)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _command_file(command: Any) -> str:
    """The file of the module defining ``command``, a module-level function there.

    Raises:
        ValueError: ``command`` is not such a function.
    """
    module = sys.modules.get(getattr(command, "__module__", "") or "")
    path = getattr(module, "__file__", None)
    if module is None or path is None or getattr(module, getattr(command, "__name__", ""), None) is not command:
        raise ValueError("not a module-level command")
    return str(path)


_routing = threading.local()
_routed = False
_route_lock = threading.Lock()


@contextlib.contextmanager
def route_finalisation_commands(client: DiracCommandClient) -> Iterator[None]:
    """Send the DIRAC commands this thread asks of Ganga's ``AsyncDiracManager`` to ``client`` meanwhile."""
    _install_route()
    _routing.client = client
    try:
        yield
    finally:
        _routing.client = None


def _install_route() -> None:
    """Wrap ``AsyncDiracManager.execute`` once: a routed thread's commands go to its client."""
    global _routed
    from GangaDirac.Lib.Server.DiracProcessManager import AsyncDiracManager
    from GangaDirac.Lib.Utilities.DiracUtilities import GangaDiracError

    with _route_lock:
        if _routed:
            return
        original = AsyncDiracManager.execute

        async def execute(
            self: Any,
            cmd: Any,
            args_dict: dict[str, Any] | None = None,
            return_raw_dict: bool = False,
            env: Any = None,
            cred_req: Any = None,
        ) -> Any:
            client: DiracCommandClient | None = getattr(_routing, "client", None)
            if (
                client is None
                or not client.usable
                or env is not None
                or getattr(cred_req, "dirac_env", None)
                or not _serves(client, self.prepare_process_env(env, cred_req))
            ):
                return await original(self, cmd, args_dict, return_raw_dict, env, cred_req)
            import asyncio

            try:
                answer = await asyncio.wrap_future(client.run(cmd, dict(args_dict or {})))
                return self.parse_command_result(answer, return_raw_dict)
            except Exception as err:
                # As Ganga's own execute words every failure.
                raise GangaDiracError(err) from err

        AsyncDiracManager.execute = execute
        _routed = True


def _serves(client: DiracCommandClient, environment: dict[str, Any]) -> bool:
    """Whether the client's process runs in the environment Ganga would run this command in (same proxy)."""
    proxy = environment.get("X509_USER_PROXY")
    return not proxy or os.path.realpath(str(proxy)) == os.path.realpath(client.proxy)
