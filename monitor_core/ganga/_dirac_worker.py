"""DIRAC's client in its own processes: drive mode's bulk status calls and Ganga's finalisation commands.

:class:`DiracStatusClient` is built by :class:`~monitor_core.backends.ProcessRunner` in a
subprocess worker, in the DIRAC environment Ganga uses (``[DIRAC]DiracEnvJSON``): its
variables are set and its Python paths (``PYTHONPATH``, and ``DIRACOS``'s ``site-packages``
as Ganga's own DIRAC executor does) put first, then DIRAC is initialised once. A hung DIRAC
call hangs only this process, which the lane kills on its timeout.

Run as ``python -m monitor_core.ganga._dirac_worker ENV_JSON PROXY``, this module is the
command worker of drive mode's finalisations (:func:`serve_commands`): it runs the DIRAC
commands Ganga's completion path asks its DIRAC executor for (``getStateTime``,
``finished_job``, ``getOutputSandbox``, ... from ``GangaDirac.Lib.Server``), each on a thread
of its own, and answers each as soon as it ends. Requests and replies are the length-prefixed
JSON frames of :mod:`monitor_core.backends._runners`, values in the tagged form of
:func:`encode`.
"""

from __future__ import annotations

import base64
import concurrent.futures
import copy
import datetime
import importlib
import importlib.util
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Final

__all__ = ["DiracStatusClient", "decode", "encode", "serve_commands"]

_PYTHON_DIR = re.compile(r"python[23]\.[0-9]+$")


def _dirac_paths(environment: dict[str, str]) -> list[str]:
    paths = [path for path in environment.get("PYTHONPATH", "").split(os.pathsep) if path]
    diracos = environment.get("DIRACOS", "")
    lib = Path(diracos) / "lib"
    if diracos and lib.is_dir():
        for entry in sorted(lib.iterdir()):
            if _PYTHON_DIR.match(entry.name) and entry.name != "python3.1":
                paths.append(str(entry / "site-packages"))
    return paths


def _enter_dirac(env_json: str, proxy: str) -> None:
    """Enter the DIRAC environment of ``env_json`` (empty: this process's as it is) and initialise DIRAC."""
    if env_json:
        with open(env_json) as stream:
            environment = {str(k): str(v) for k, v in json.load(stream).items()}
        os.environ.update(environment)
        for path in reversed(_dirac_paths(environment)):
            if path not in sys.path:
                sys.path.insert(0, path)
    if proxy:
        os.environ["X509_USER_PROXY"] = proxy
    from DIRAC.Core.Base.Script import parseCommandLine

    parseCommandLine(ignoreErrors=True)


class DiracStatusClient:
    """Asks DIRAC about jobs in bulk, through DIRAC's own ``Dirac().getJobStatus``.

    Args:
        env_json: the DIRAC environment file (``[DIRAC]DiracEnvJSON``), or empty to use this
            process's environment as it is.
        proxy: the proxy file to present (``X509_USER_PROXY``), if any.
    """

    def __init__(self, env_json: str = "", proxy: str = "") -> None:
        _enter_dirac(env_json, proxy)
        from DIRAC.Interfaces.API.Dirac import Dirac

        self._dirac = Dirac()

    def status(self, dirac_ids: list[int]) -> list[list[Any]]:
        """``[id, Status, MinorStatus, Site]`` of each job DIRAC knows.

        Raises:
            RuntimeError: DIRAC answered ``S_ERROR`` or something that is not a status answer.
        """
        answer = self._dirac.getJobStatus([int(job_id) for job_id in dirac_ids])
        if not isinstance(answer, dict) or not answer.get("OK"):
            message = answer.get("Message") if isinstance(answer, dict) else answer
            raise RuntimeError(f"DIRAC: {message}")
        value = answer.get("Value")
        if not isinstance(value, dict):
            raise RuntimeError(f"DIRAC's status answer is not a mapping: {value!r:.200}")
        found: list[list[Any]] = []
        for job_id, record in value.items():
            if isinstance(record, dict):
                found.append([int(job_id), record.get("Status"), record.get("MinorStatus"), record.get("Site")])
            else:
                found.append([int(job_id), None, None, None])
        return found

    def ping(self) -> bool:
        """Whether the client is up (used to warm a worker)."""
        return True


# -- values across the pipe ------------------------------------------------------------------


def encode(value: Any) -> Any:
    """A DIRAC command's argument or answer as JSON, with the types JSON lacks tagged.

    Every JSON object is a tag: ``{"dict": [[key, value], ...]}`` (keys of any type),
    ``{"tuple": [...]}``, ``{"set": [...]}``, ``{"datetime": ISO}``, ``{"bytes": base64}``.

    Raises:
        TypeError: a value of another type.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [encode(item) for item in value]
    if isinstance(value, tuple):
        return {"tuple": [encode(item) for item in value]}
    if isinstance(value, dict):
        return {"dict": [[encode(key), encode(item)] for key, item in value.items()]}
    if isinstance(value, (set, frozenset)):
        return {"set": [encode(item) for item in value]}
    if isinstance(value, datetime.datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, bytes):
        return {"bytes": base64.b64encode(value).decode()}
    raise TypeError(f"cannot pass a {type(value).__name__} between DIRAC's client and Ganga")


def decode(value: Any) -> Any:
    """The value :func:`encode` made JSON of.

    Raises:
        ValueError: an object that is not one of :func:`encode`'s tags.
    """
    if isinstance(value, list):
        return [decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, body),) = value.items()
        if tag == "dict" and isinstance(body, list):
            return {decode(key): decode(item) for key, item in body}
        if tag == "tuple" and isinstance(body, list):
            return tuple(decode(item) for item in body)
        if tag == "set" and isinstance(body, list):
            return {decode(item) for item in body}
        if tag == "datetime" and isinstance(body, str):
            return datetime.datetime.fromisoformat(body)
        if tag == "bytes" and isinstance(body, str):
            return base64.b64decode(body)
    raise ValueError(f"not an encoded value: {value!r:.100}")


# -- the command worker ----------------------------------------------------------------------

_MONITORING: Final = "WorkloadManagement/JobMonitoring"
_LOGGING: Final = "getJobLoggingInfo"
_PARAMETERS: Final = "getJobParameters"
_ATTRIBUTES: Final = "getJobAttributes"
_READ_TTL: Final = 120.0
"""Seconds a finished job's records are kept for its finalisation, if nobody releases them."""


class JobReads:
    """A finished job's logging records, parameters and attributes, read once for its finalisation.

    Ganga's completion path reads a finished job's logging records three times (the state
    times of ``running``, ``completing`` and ``completed``), its parameters twice (CPU time,
    output data) and its attributes once, one after another, and only then is its output
    sandbox downloaded. A job DIRAC reports final no longer changes these, so they are asked
    for side by side as soon as the job is seen final (:meth:`prefetch`) and Ganga's commands
    read DIRAC's answers from here. An answer that is not ``OK`` is not shared: the command
    asks DIRAC itself.
    """

    def __init__(self, dirac: Callable[[], Any], monitoring: Callable[[], Any], *, threads: int = 32) -> None:
        self._dirac = dirac
        self._monitoring = monitoring
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="dirac-read")
        self._lock = threading.Lock()
        self._reads: dict[tuple[str, int], tuple[float, concurrent.futures.Future[Any]]] = {}

    def prefetch(self, job_id: int, completed: bool) -> None:
        """Start reading a final job's records (``completed``: also what a completed job's finalisation reads)."""
        methods = (_LOGGING, _PARAMETERS, _ATTRIBUTES) if completed else (_LOGGING,)
        now = time.monotonic()
        with self._lock:
            for key, (since, _) in list(self._reads.items()):
                if now - since > _READ_TTL:
                    del self._reads[key]
            for method in methods:
                if (method, job_id) not in self._reads:
                    self._reads[(method, job_id)] = (now, self._pool.submit(self._read, method, job_id))

    def release(self, job_id: int) -> None:
        """Forget a job's records (its finalisation ended)."""
        with self._lock:
            for method in (_LOGGING, _PARAMETERS, _ATTRIBUTES):
                self._reads.pop((method, job_id), None)

    def read(self, method: str, job_id: Any, ask: Callable[[], Any]) -> Any:
        """DIRAC's answer to ``method`` about ``job_id``: the one read already, or ``ask()``."""
        try:
            key = (method, int(job_id))
        except (TypeError, ValueError):
            return ask()
        with self._lock:
            entry = self._reads.get(key)
        if entry is not None:
            try:
                answer = entry[1].result()
            except Exception:  # noqa: BLE001 - the read failed: the command asks DIRAC itself
                answer = None
            if isinstance(answer, dict) and answer.get("OK"):
                return copy.deepcopy(answer)
        return ask()

    def _read(self, method: str, job_id: int) -> Any:
        if method == _ATTRIBUTES:
            return self._monitoring().getJobAttributes(job_id)
        return getattr(self._dirac(), method)(job_id)


class _ReadingDirac:
    """DIRAC's API object as Ganga's commands get it, its reads about finished jobs shared through :class:`JobReads`."""

    def __init__(self, dirac: Any, reads: JobReads) -> None:
        self._dirac = dirac
        self._reads = reads

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dirac, name)

    def getJobLoggingInfo(self, jobID: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N802, N803 - DIRAC's names
        def ask() -> Any:
            return self._dirac.getJobLoggingInfo(jobID, *args, **kwargs)

        return ask() if args or kwargs else self._reads.read(_LOGGING, jobID, ask)

    def getJobParameters(self, jobID: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N802, N803 - DIRAC's names
        def ask() -> Any:
            return self._dirac.getJobParameters(jobID, *args, **kwargs)

        return ask() if args or kwargs else self._reads.read(_PARAMETERS, jobID, ask)


def _reading_rpc_client(original: Any, reads: JobReads) -> type:
    """DIRAC's ``RPCClient`` whose ``getJobAttributes`` of the job monitoring service reads through ``reads``.

    Ganga's ``finished_job`` asks that service for the job's attributes directly.
    """

    class ReadingRPCClient:
        def __init__(self, service: str, *args: Any, **kwargs: Any) -> None:
            self._client = original(service, *args, **kwargs)
            self._monitoring = service == _MONITORING

        def __getattr__(self, name: str) -> Any:
            method = getattr(self._client, name)
            if not self._monitoring or name != _ATTRIBUTES:
                return method

            def get_job_attributes(job_id: Any, *args: Any, **kwargs: Any) -> Any:
                def ask() -> Any:
                    return method(job_id, *args, **kwargs)

                return ask() if args or kwargs else reads.read(_ATTRIBUTES, job_id, ask)

            return get_job_attributes

    return ReadingRPCClient


class _Commands:
    """Ganga's DIRAC command modules, loaded from their files (no Ganga package is imported)."""

    def __init__(self) -> None:
        self._modules: dict[str, ModuleType] = {}
        self._lock = threading.Lock()

    def get(self, path: str, name: str) -> Callable[..., Any]:
        with self._lock:
            module = self._modules.get(path)
            if module is None:
                spec = importlib.util.spec_from_file_location(f"_ganga_dirac_commands_{len(self._modules)}", path)
                if spec is None or spec.loader is None:
                    raise ImportError(f"cannot load DIRAC commands from {path}")
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                self._modules[path] = module
        command = getattr(module, name, None)
        if not callable(command):
            raise AttributeError(f"{path} has no DIRAC command {name}")
        return command  # type: ignore[no-any-return]


def serve_commands(env_json: str, proxy: str, *, threads: int = 64) -> int:
    """Answer Ganga's DIRAC commands on stdin/stdout until stdin closes, each as soon as it ends.

    Requests: ``{"op": "run", "id", "file", "name", "args"}`` (a command of the module in
    ``file``, called as Ganga's DIRAC executor calls it, with ``dirac`` added),
    ``{"op": "prefetch", "jobs": [[id, completed], ...]}`` and ``{"op": "release", "jobs": [id, ...]}``.
    Replies: ``{"id", "ok": true, "value"}`` or ``{"id", "ok": false, "error"}``.
    """
    from ..backends._runners import read_frame, reply_to, write_frame

    _enter_dirac(env_json, proxy)
    from DIRAC.Interfaces.API.Dirac import Dirac

    rpc_module = importlib.import_module("DIRAC.Core.DISET.RPCClient")
    original = getattr(rpc_module, "RPCClient")  # noqa: B009 - a module only DIRAC's environment has
    reads = JobReads(Dirac, lambda: original(_MONITORING))
    setattr(rpc_module, "RPCClient", _reading_rpc_client(original, reads))  # noqa: B010
    commands = _Commands()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # The protocol owns stdout; stray prints from DIRAC or a command go to stderr.
    sys.stdout = sys.stderr
    written = threading.Lock()
    pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="dirac-command")

    def answer(request: dict[str, Any]) -> Any:
        command = commands.get(str(request["file"]), str(request["name"]))
        arguments = decode(request["args"])
        if not isinstance(arguments, dict):
            raise TypeError("a command's arguments are a mapping")
        # As Ganga's DIRAC executor runs a command: a fresh API object passed as ``dirac``.
        return encode(command(dirac=_ReadingDirac(Dirac(), reads), **arguments))

    def run(request: dict[str, Any]) -> None:
        reply = reply_to(request["id"], lambda: answer(request))
        with written:
            write_frame(stdout, reply)

    while True:
        request = read_frame(stdin)
        if request is None:
            pool.shutdown(wait=False, cancel_futures=True)
            return 0
        if not isinstance(request, dict):
            continue
        operation = request.get("op")
        if operation == "run":
            pool.submit(run, request)
        elif operation == "prefetch":
            for job_id, completed in request.get("jobs", []):
                reads.prefetch(int(job_id), bool(completed))
        elif operation == "release":
            for job_id in request.get("jobs", []):
                reads.release(int(job_id))


if __name__ == "__main__":
    sys.exit(serve_commands(sys.argv[1], sys.argv[2]))
