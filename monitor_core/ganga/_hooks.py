"""Hooks into a running Ganga 8.7.12: status changes, Ganga's monitoring calls, Local wrappers, shutdown.

Every hook runs on whichever Ganga thread made the call, so each one only reads a few plain
values, hands them to the listener (which must not block) and never lets an error of its own
reach Ganga. GangaCore is imported inside functions, so this module imports without Ganga.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from .._events import ChangeSource
from .._model import OpKind
from ._changes import CallContext, StatusChange

__all__ = ["GangaHooks", "HookListener", "current_call", "job_change"]

log = logging.getLogger(__name__)

current_call: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar("ganga_monitor_call", default=None)
"""The monitoring call the running code is part of (ours in drive mode, Ganga's in observe mode)."""

_FINAL = frozenset({"completed", "failed", "killed", "completed_frozen", "failed_frozen"})
_DIRAC_BASE: Final = "GangaDirac.Lib.Backends.DiracBase"
_DIRAC_MANAGER: Final = "GangaDirac.Lib.Server.DiracProcessManager"
_DOWNLOADS: Final = frozenset({"finished_job", "getOutputSandbox"})
"""Ganga's DIRAC commands that download a job's output sandbox."""

_finalising: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "ganga_monitor_finalising", default=None
)
"""The job (id, backend) whose finalisation the running code is part of (observe mode)."""
_SUBMISSION = frozenset({("new", "submitting"), ("submitting", "submitted"), ("submitting", "new")})


class HookListener(Protocol):
    """Where the hooks report; every method may be called from any thread and must not block."""

    def status_changed(self, change: StatusChange) -> None:
        """A job's status changed outside a collecting call."""

    def wrapper_started(self, job_id: str, pidfd: int | None) -> None:
        """A Local wrapper process started for a job (``pidfd`` is ``None`` if it already ended)."""

    def ganga_call_queued(self, backend: str, job_ids: tuple[str, ...], kind: OpKind = OpKind.POLL) -> int:
        """Ganga's monitoring planned an update call (or a finalisation, an output download: ``kind`` fetch_output).

        Returns the operation id to report it under.
        """

    def ganga_call_started(self, op_id: int, backend: str) -> None:
        """Ganga's update call began."""

    def ganga_call_finished(
        self, op_id: int, backend: str, job_ids: tuple[str, ...], error: str | None, changed: int
    ) -> None:
        """Ganga's update call ended (``error`` is set if it raised)."""

    def session_ending(self) -> None:
        """Ganga's shutdown is starting (called on the thread running it, before the registry closes)."""


def _name_of(obj: Any) -> str:
    from GangaCore.GPIDev.Base.Proxy import getName

    return str(getName(obj)) if obj is not None else "unknown"


def job_change(job: Any, old: str | None, source: ChangeSource, *, at: float | None = None) -> StatusChange:
    """Describe a raw Ganga job's present status as a change from ``old`` (cheap attribute reads only)."""
    new = str(job.status)
    master = job.master
    exit_code = None
    outputdir = None
    if new in _FINAL:
        exit_code = getattr(job.backend, "exitcode", None)
        outputdir = job.outputdir
    return StatusChange(
        job_id=str(job.getFQID(".")),
        backend=_name_of(job.backend),
        old=old,
        new=new,
        at=time.time() if at is None else at,
        name=str(job.name or ""),
        group=str(master.getFQID(".")) if master is not None else "",
        exit_code=exit_code if isinstance(exit_code, int) else None,
        source=source,
        outputdir=str(outputdir) if outputdir else None,
    )


class GangaHooks:
    """Installs the hooks on Ganga's classes and objects, and takes them off again.

    Args:
        listener: receives what the hooks see.
    """

    def __init__(self, listener: HookListener) -> None:
        self._listener = listener
        self._restore: list[Callable[[], None]] = []
        self._updating = threading.local()

    # -- life cycle ----------------------------------------------------------------------------

    def install(self, *, ganga_monitoring: bool, local_exits: bool) -> None:
        """Hook status changes and the shutdown, plus Ganga's monitoring calls and/or Local wrapper starts."""
        self._hook_status()
        self._hook_shutdown()
        if ganga_monitoring:
            self._hook_monitoring_service()
            self._hook_dirac_finalisation()
        if local_exits:
            self._hook_local_wrapper()

    def uninstall(self) -> None:
        """Put back everything that was replaced, newest first."""
        while self._restore:
            self._restore.pop()()

    # -- status changes ------------------------------------------------------------------------

    def _emit(self, job: Any, old: str | None, forced: ChangeSource | None = None) -> None:
        if str(job.status) == old:
            return
        context = current_call.get()
        if forced is not None:
            source: ChangeSource = forced
        elif context is not None:
            source = context.source
        elif (old, str(job.status)) in _SUBMISSION:
            source = "submit"
        else:
            source = "user"
        change = job_change(job, old, source)
        if context is not None:
            context.changed += 1
            if context.op_id is not None:
                change = _with_op(change, context.op_id)
            if context.batch is not None and change.job_id in context.batch:
                context.collected.append(change)
                return
        self._listener.status_changed(change)

    def _hook_status(self) -> None:
        from GangaCore.GPIDev.Lib.Job.Job import Job

        original_update = Job.updateStatus
        original_remove = Job.remove
        hooks = self

        @functools.wraps(original_update)
        def update_status(job: Any, newstatus: Any, *args: Any, **kwargs: Any) -> Any:
            busy: set[int] = hooks._busy()
            if id(job) in busy:
                # A hook inside Ganga's own call redirects it (completed -> failed): the outer call reports.
                return original_update(job, newstatus, *args, **kwargs)
            old = str(job.status)
            busy.add(id(job))
            try:
                return original_update(job, newstatus, *args, **kwargs)
            finally:
                busy.discard(id(job))
                hooks._safely(hooks._emit, job, old)

        @functools.wraps(original_remove)
        def remove(job: Any, *args: Any, **kwargs: Any) -> Any:
            old = str(job.status)
            try:
                return original_remove(job, *args, **kwargs)
            finally:
                # remove() writes the status directly, past updateStatus.
                hooks._safely(hooks._emit, job, old, "user")

        Job.updateStatus = update_status
        Job.remove = remove

        def restore() -> None:
            Job.updateStatus = original_update
            Job.remove = original_remove

        self._restore.append(restore)

    def _busy(self) -> set[int]:
        busy: set[int] | None = getattr(self._updating, "jobs", None)
        if busy is None:
            busy = self._updating.jobs = set()
        return busy

    def _safely(self, function: Callable[..., None], *args: Any) -> None:
        try:
            function(*args)
        except Exception:
            # A monitor must never break the session it watches.
            log.exception("ganga monitor hook failed")

    # -- Local wrapper processes -----------------------------------------------------------------

    def _hook_local_wrapper(self) -> None:
        from GangaCore.Lib.Localhost.Localhost import Localhost

        original_run = Localhost.run
        hooks = self

        @functools.wraps(original_run)
        def run(backend: Any, scriptpath: Any) -> Any:
            result = original_run(backend, scriptpath)
            hooks._safely(hooks._wrapper_started, backend)
            return result

        Localhost.run = run

        def restore() -> None:
            Localhost.run = original_run

        self._restore.append(restore)

    def _wrapper_started(self, backend: Any) -> None:
        pids = backend.wrapper_pid
        pid = pids[-1] if isinstance(pids, list) and pids else pids
        if not isinstance(pid, int) or pid <= 0:
            return
        job = backend.getJobObject()
        try:
            # Opened here, right after the start, so the pid cannot have been reused yet.
            pidfd: int | None = os.pidfd_open(pid)
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise
            pidfd = None
        self._listener.wrapper_started(str(job.getFQID(".")), pidfd)

    # -- Ganga's own monitoring loop -----------------------------------------------------------

    def _hook_monitoring_service(self) -> None:
        from GangaCore.Core import monitoring_component

        service = monitoring_component
        if service is None:
            log.warning("Ganga's monitoring service does not exist; its calls are not shown")
            return
        original = service.run_monitoring_task
        listener = self._listener

        def run_monitoring_task(task: Any, jobs: Any) -> Any:
            # Instance attribute: IBackend looks the method up on the service each time.
            if not service.enabled or not jobs:
                return original(task, jobs)
            job_ids = tuple(str(job.getFQID(".")) for job in jobs)
            backend = _name_of(jobs[0].backend)
            op_id = listener.ganga_call_queued(backend, job_ids)
            return original(_timed(task, listener, op_id, backend, job_ids), jobs)

        service.run_monitoring_task = run_monitoring_task

        def restore() -> None:
            del service.run_monitoring_task

        self._restore.append(restore)

    # -- Ganga's Dirac finalisations and output downloads (observe mode) -------------------------

    def _hook_dirac_finalisation(self) -> None:
        """Report each finalisation of a Dirac job, and each output sandbox download, as a fetch operation."""
        base_module = sys.modules.get(_DIRAC_BASE)
        manager_module = sys.modules.get(_DIRAC_MANAGER)
        if base_module is None or manager_module is None:
            return  # Ganga's Dirac plugin is not loaded in this session
        dirac_base = base_module.DiracBase
        manager = manager_module.AsyncDiracManager
        original_finalisation = dirac_base.__dict__["job_finalisation"]
        original_execute = manager.execute
        finalise = original_finalisation.__func__
        listener = self._listener

        def job_finalisation(job: Any, updated_dirac_status: Any) -> Any:
            # Called when Ganga plans the task; the coroutine runs when the task starts.
            job_id, backend = str(job.getFQID(".")), _name_of(job.backend)
            op_id = listener.ganga_call_queued(backend, (job_id,), OpKind.FETCH_OUTPUT)
            return _reported(
                finalise(job, updated_dirac_status), listener, op_id, backend, (job_id,), (job_id, backend)
            )

        async def execute(manager_self: Any, cmd: Any, *args: Any, **kwargs: Any) -> Any:
            finalising = _finalising.get()
            if getattr(cmd, "__name__", "") not in _DOWNLOADS or finalising is None:
                return await original_execute(manager_self, cmd, *args, **kwargs)
            job_id, backend = finalising
            op_id = listener.ganga_call_queued(backend, (job_id,), OpKind.FETCH_OUTPUT)
            return await _reported(
                original_execute(manager_self, cmd, *args, **kwargs), listener, op_id, backend, (job_id,), None
            )

        dirac_base.job_finalisation = staticmethod(job_finalisation)
        manager.execute = functools.wraps(original_execute)(execute)

        def restore() -> None:
            dirac_base.job_finalisation = original_finalisation
            manager.execute = original_execute

        self._restore.append(restore)

    # -- shutdown --------------------------------------------------------------------------------

    def _hook_shutdown(self) -> None:
        from GangaCore.Core.InternalServices import ShutdownManager

        original = ShutdownManager._unprotected_ganga_exitfuncs
        listener = self._listener

        @functools.wraps(original)
        def exit_functions(*args: Any, **kwargs: Any) -> Any:
            # Looked up by name at exit, so this replacement runs: first, while the registry is open.
            try:
                listener.session_ending()
            except Exception:
                log.exception("ganga monitor: announcing the session end failed")
            return original(*args, **kwargs)

        ShutdownManager._unprotected_ganga_exitfuncs = exit_functions

        def restore() -> None:
            ShutdownManager._unprotected_ganga_exitfuncs = original

        self._restore.append(restore)


def _with_op(change: StatusChange, op_id: int) -> StatusChange:
    from dataclasses import replace

    return replace(change, op_id=op_id)


async def _reported(
    work: Any,
    listener: HookListener,
    op_id: int,
    backend: str,
    job_ids: tuple[str, ...],
    finalising: tuple[str, str] | None,
) -> Any:
    """Await one of Ganga's fetch-like steps, reporting its start, end and outcome under ``op_id``."""
    context = CallContext(source="fetch", op_id=op_id)
    token = current_call.set(context)
    marker = _finalising.set(finalising) if finalising is not None else None
    listener.ganga_call_started(op_id, backend)
    error = None
    try:
        return await work
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if marker is not None:
            _finalising.reset(marker)
        current_call.reset(token)
        listener.ganga_call_finished(op_id, backend, job_ids, error, context.changed)


def _timed(task: Any, listener: HookListener, op_id: int, backend: str, job_ids: tuple[str, ...]) -> Any:
    """Wrap one of Ganga's update calls so its start, end, outcome and changes are reported.

    Ganga picks how it runs a task by whether it is a coroutine function, so the wrapper is one when the task is.
    """

    def finished(context: CallContext, error: str | None) -> None:
        listener.ganga_call_finished(op_id, backend, job_ids, error, context.changed)

    if asyncio.iscoroutinefunction(task):

        async def timed_async(jobs: Any) -> Any:
            context = CallContext(source="poll", op_id=op_id)
            token = current_call.set(context)
            listener.ganga_call_started(op_id, backend)
            error = None
            try:
                return await task(jobs)
            except BaseException as exc:
                error = f"{type(exc).__name__}: {exc}"
                raise
            finally:
                current_call.reset(token)
                finished(context, error)

        return timed_async

    def timed(jobs: Any) -> Any:
        context = CallContext(source="poll", op_id=op_id)
        token = current_call.set(context)
        listener.ganga_call_started(op_id, backend)
        error = None
        try:
            return task(jobs)
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            current_call.reset(token)
            finished(context, error)

    return timed
