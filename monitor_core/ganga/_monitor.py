"""The monitor inside a Ganga session: its loop thread, its mode, its socket, its end.

The monitor's asyncio loop runs in a daemon thread of the Ganga process. Ganga's threads
(the prompt, Ganga's monitoring loop and its pool, the monitor's own worker threads) reach
it only through ``call_soon_threadsafe`` and ``run_coroutine_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .._bus import EventBus
from .._commands import Command, RefreshJob, SetInterval, TailOutput, execute_command
from .._events import CommandAcked, Snapshot
from .._lane import SchedulerConfig
from .._model import Operation, OpKind
from ..backends.slurm import SlurmCommands
from ._changes import StatusChange
from ._drive import DriveConfig, GangaDriver
from ._hooks import GangaHooks
from ._observe import ObservedSession
from ._registry import configured_mode, existing_jobs, poll_rate, thread_pool_size

__all__ = ["GangaMonitor", "current_monitor", "start_monitor", "stop_monitor"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_TAIL_BYTES = 4096
_START_TIMEOUT = 30.0

_current: GangaMonitor | None = None
_current_lock = threading.Lock()


class GangaMonitor:
    """Monitoring of the Ganga session this code runs in, served on a Unix socket.

    Args:
        drive: take over Ganga's monitoring loop (drive mode) instead of watching it.
        session: the session's name on the bus and its socket's name.
        socket_path: where to serve (default: the user's runtime directory).
        serve: serve the bus on a socket at all.
        drive_config: drive-mode policies.
    """

    def __init__(
        self,
        *,
        drive: bool,
        session: str | None = None,
        socket_path: Path | None = None,
        serve: bool = True,
        drive_config: DriveConfig | None = None,
    ) -> None:
        self.drive = drive
        self.session = session or f"ganga-{os.getpid()}"
        self._socket_path = socket_path
        self._serve = serve
        self._drive_config = drive_config or DriveConfig()
        self.bus = EventBus()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="ganga-monitor", daemon=True)
        self._hooks = GangaHooks(self)
        self._driver: GangaDriver | None = None
        self._observed: ObservedSession | None = None
        self._server: Any = None
        self._ganga_was_enabled = False
        self._restore_ganga: list[Callable[[], None]] = []
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self.ended_reason: str | None = None

    # -- life cycle ----------------------------------------------------------------------------

    @property
    def socket_path(self) -> Path | None:
        """Where viewers attach (``None`` until started, or when not serving)."""
        return None if self._server is None else Path(self._server.path)

    @property
    def scheduler(self) -> Any:
        """Drive mode's scheduler (``None`` in observe mode)."""
        return None if self._driver is None else self._driver.scheduler

    @property
    def running(self) -> bool:
        """Started and not stopped."""
        return self._thread.is_alive() and not self._stopped.is_set()

    def snapshot(self, timeout: float = 10.0) -> Snapshot:
        """The present state of every job, operation and backend, from any thread."""

        async def take() -> Snapshot:
            if self._driver is not None:
                return self._driver.scheduler.snapshot()
            assert self._observed is not None
            return self._observed.snapshot()

        return self._call(take(), timeout)

    def viewers(self, timeout: float = 10.0) -> int:
        """How many viewers are attached over the socket, from any thread."""

        async def count() -> int:
            return 0 if self._server is None else len(self._server.statistics().clients)

        return self._call(count(), timeout)

    def start(self) -> GangaMonitor:
        """Start the loop thread, take over or watch Ganga's monitoring, and serve the bus.

        Raises:
            RuntimeError: Ganga is not running in this process.
        """
        _require_ganga()
        self._thread.start()
        try:
            self._call(self._open_state(), _START_TIMEOUT)
            if self.drive:
                self._take_over_ganga_loop()
            self._hooks.install(ganga_monitoring=not self.drive, local_exits=self.drive)
            # Jobs already in the registry, read once; from now on the hooks say what changes.
            for change in existing_jobs():
                self.status_changed(change)
            if self._serve:
                self._call(self._open_server(), _START_TIMEOUT)
        except BaseException:
            self.stop("the monitor failed to start", hand_back=True)
            raise
        mode = "drive" if self.drive else "observe"
        where = f" on {self.socket_path}" if self.socket_path else ""
        log.info("ganga monitor: %s mode, session %s%s", mode, self.session, where)
        return self

    def stop(self, reason: str = "monitor stopped", *, hand_back: bool = True) -> None:
        """Announce the end to viewers, stop the loop thread and take every hook off.

        Args:
            reason: what viewers are told.
            hand_back: in drive mode, turn Ganga's own monitoring loop back on if it was on.
        """
        with self._stop_lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
            self.ended_reason = reason
            self._hooks.uninstall()
            if self._thread.is_alive():
                try:
                    self._call(self._close(reason), self._drive_config.scheduler.drain_timeout + 10.0)
                except Exception:
                    log.exception("ganga monitor: closing did not finish cleanly")
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=5.0)
            for restore in reversed(self._restore_ganga):
                restore()
            self._restore_ganga.clear()
            if hand_back and self.drive and self._ganga_was_enabled:
                _enable_ganga_loop()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, _T], timeout: float) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        # A closed loop means the session is ending: there is nobody left to tell.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    async def _open_state(self) -> None:
        if self.drive:
            self._driver = GangaDriver(
                self.bus,
                self.session,
                self._drive_config,
                ganga_poll_rate=poll_rate,
                max_resubmit_fraction=_max_resubmit_fraction(),
            )
            await self._driver.start()
        else:
            self._observed = ObservedSession(
                self.bus,
                self.session,
                poll_rate=poll_rate,
                concurrency=thread_pool_size(),
                ganga_enabled=_ganga_loop_enabled,
            )
            await self._observed.start()

    async def _open_server(self) -> None:
        from ..transports.unix_socket import SocketServer

        mode = "drive" if self.drive else "observe"
        self._server = SocketServer(
            self.bus,
            session=self.session,
            path=self._socket_path,
            execute=self.execute,
            description=f"Ganga session, pid {os.getpid()}, {mode} mode",
        )
        await self._server.start()

    async def _close(self, reason: str) -> None:
        if self._driver is not None:
            await self._driver.aclose(reason)
        if self._observed is not None:
            await self._observed.aclose(reason)
        if self._server is not None:
            await self._server.aclose()
        self.bus.close()

    # -- Ganga's own loop (drive mode) -----------------------------------------------------------

    def _take_over_ganga_loop(self) -> None:
        from GangaCore.Core import monitoring_component as service

        if service is None:
            return
        self._ganga_was_enabled = bool(service.enabled)
        if service.enabled:
            service.disable()

        def refuse(*_args: Any, **_kwargs: Any) -> bool:
            log.warning("the ganga monitor drives monitoring; stop_monitor() hands it back to Ganga's loop")
            return False

        # Two pollers on one job would both run its completion; Ganga's loop stays off while we drive.
        for name in ("enable", "runMonitoring"):
            setattr(service, name, refuse)

        def restore() -> None:
            for name in ("enable", "runMonitoring"):
                delattr(service, name)

        self._restore_ganga.append(restore)

    # -- what the hooks report (any thread) ------------------------------------------------------

    def status_changed(self, change: StatusChange) -> None:
        """A Ganga job changed status."""
        if self._driver is not None:
            self._post(self._driver.post, change)
        elif self._observed is not None:
            self._post(self._observed.apply, change)

    def wrapper_started(self, job_id: str, pidfd: int | None) -> None:
        """A Local wrapper process started."""
        if self._driver is not None:
            self._post(self._driver.wrapper_started, job_id, pidfd)
        elif pidfd is not None:
            os.close(pidfd)

    def ganga_call_queued(self, backend: str, job_ids: tuple[str, ...], kind: OpKind = OpKind.POLL) -> int:
        """Ganga's loop planned an update call, a finalisation or an output download."""
        op_id = Operation(kind, backend, job_ids).op_id
        if self._observed is not None:
            self._post(self._observed.call_queued, op_id, backend, job_ids, time.time(), kind)
        return op_id

    def ganga_call_started(self, op_id: int, backend: str) -> None:
        """Ganga's update call began."""
        if self._observed is not None:
            self._post(self._observed.call_started, op_id, backend, time.time())

    def ganga_call_finished(
        self, op_id: int, backend: str, job_ids: tuple[str, ...], error: str | None, changed: int
    ) -> None:
        """Ganga's update call ended."""
        if self._observed is not None:
            self._post(self._observed.call_finished, op_id, backend, job_ids, error, changed, time.time())

    def session_ending(self) -> None:
        """Ganga is shutting down: tell the viewers, then get out of its way."""
        self.stop("Ganga session ended", hand_back=False)

    # -- commands from viewers (loop thread) -----------------------------------------------------

    def execute(self, command: Command) -> CommandAcked:
        """Carry out a viewer's command; never raises."""
        if isinstance(command, TailOutput):
            return self._tail(command)
        if self._driver is not None:
            return execute_command(self._driver.scheduler, command)
        if isinstance(command, SetInterval):
            return self._set_ganga_rate(command)
        what = "refreshed" if isinstance(command, RefreshJob) else "paused or resumed"
        return _ack(
            command,
            False,
            f"observe mode: Ganga's own loop decides what is polled, so nothing is {what}; "
            "start_monitor(drive=True) takes monitoring over",
        )

    def _set_ganga_rate(self, command: SetInterval) -> CommandAcked:
        if not command.seconds > 0:
            return _ack(command, False, "the poll interval must be a positive number of seconds")
        from GangaCore.Utility.Config import getConfig

        try:
            getConfig("PollThread").setUserValue(command.backend, command.seconds)
        except Exception as exc:  # noqa: BLE001 - Ganga's config raises its own error types
            return _ack(command, False, f"Ganga refused [PollThread]{command.backend}: {exc}")
        return _ack(command, True, f"Ganga polls {command.backend} every {command.seconds:g}s from its next poll")

    def _tail(self, command: TailOutput) -> CommandAcked:
        state = self._driver or self._observed
        directory = None if state is None else state.outputdirs.get(command.job_id)
        if directory is None:
            return _ack(command, False, f"job {command.job_id} has no output in Ganga's workspace yet")
        parts = []
        for name in ("stdout", "stderr"):
            path = Path(directory) / name
            if path.is_file():
                parts.append(f"==> {name} <==\n{_tail_file(path)}")
        return _ack(command, True, "\n".join(parts) or f"(no stdout or stderr in {directory})")


def _ack(command: Command, ok: bool, message: str) -> CommandAcked:
    return CommandAcked(at=time.time(), command_id=command.command_id, ok=ok, message=message)


def _tail_file(path: Path) -> str:
    with path.open("rb") as stream:
        stream.seek(0, 2)
        stream.seek(max(0, stream.tell() - _TAIL_BYTES))
        return stream.read().decode(errors="replace")


def _require_ganga() -> None:
    try:
        from GangaCore.Core import monitoring_component  # noqa: F401
        from GangaCore.GPIDev.Lib.Job.Job import Job  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            "start_monitor() runs inside a Ganga session (the `ganga` command, or ~/.ganga.py); "
            "install Ganga with `pip install 'ganga-monitor[ganga]'`"
        ) from exc


def _ganga_loop_enabled() -> bool:
    from GangaCore.Core import monitoring_component as service

    return bool(service is not None and service.enabled)


def _enable_ganga_loop() -> None:
    from GangaCore.Core import monitoring_component as service

    if service is None:
        return
    # Backends left in this table are never polled again after a re-enable (a Ganga 8.7.12 bug).
    service.active_backends = {}
    service.enable()


def _max_resubmit_fraction() -> float:
    from GangaCore.Utility.Config import getConfig

    try:
        return float(getConfig("PollThread")["MaxFracForResubmit"])
    except (KeyError, TypeError, ValueError):
        return 0.25


def current_monitor() -> GangaMonitor | None:
    """The monitor running in this process, if any."""
    return _current


def start_monitor(
    drive: bool | None = None,
    *,
    session: str | None = None,
    socket_path: str | Path | None = None,
    serve: bool = True,
    poll_intervals: Mapping[str, float] | None = None,
    call_timeout: float | None = None,
    max_concurrency: int | None = None,
    scheduler: SchedulerConfig | None = None,
    slurm: SlurmCommands | bool = True,
    slurm_vanish_grace: float | None = None,
) -> GangaMonitor:
    """Monitor this Ganga session and serve it to ``ganga-monitor-tui`` on the user's socket.

    Call it at Ganga's prompt, in a Ganga script, or in ``~/.ganga.py``. A second call
    returns the running monitor.

    Args:
        drive: ``True`` takes over Ganga's monitoring loop; ``False`` watches it; ``None``
            reads ``[GangaMonitor]mode`` (``drive`` or ``observe``) from Ganga's
            configuration, then ``GANGA_MONITOR_MODE``, and watches when nothing says.
        session: the session's name on the bus (default ``ganga-<pid>``).
        socket_path: where to serve (default: the user's runtime directory).
        serve: serve on a socket (``False`` keeps the bus in this process).
        poll_intervals: drive mode: seconds between polls, by Ganga backend name.
        call_timeout: drive mode: seconds a backend's monitoring call may take.
        max_concurrency: drive mode: monitoring calls in flight per backend.
        scheduler: drive mode: retry, backoff and breaker policies.
        slurm: drive mode: ask Slurm about Ganga's ``Slurm`` jobs in bulk (``True``, with the
            environment's ``SLURM_CONF``; or where its commands are), or ``False`` to poll them
            one status file at a time as Ganga does.
        slurm_vanish_grace: drive mode: seconds a job Slurm says has ended may wait for its
            exit code to reach Ganga's status file before it is failed (default 30).

    Raises:
        RuntimeError: not inside a Ganga session.
    """
    global _current
    with _current_lock:
        if _current is not None and _current.running:
            return _current
        if drive is None:
            _require_ganga()
            drive = bool(configured_mode())
        defaults = DriveConfig()
        config = DriveConfig(
            poll_intervals=dict(poll_intervals or {}),
            call_timeout=call_timeout if call_timeout is not None else defaults.call_timeout,
            max_concurrency=max_concurrency if max_concurrency is not None else defaults.max_concurrency,
            scheduler=scheduler or defaults.scheduler,
            slurm=slurm if isinstance(slurm, SlurmCommands) else defaults.slurm if slurm else None,
            slurm_vanish_grace=defaults.slurm_vanish_grace if slurm_vanish_grace is None else slurm_vanish_grace,
        )
        monitor = GangaMonitor(
            drive=drive,
            session=session,
            socket_path=Path(socket_path) if socket_path is not None else None,
            serve=serve,
            drive_config=config,
        )
        monitor.start()
        _current = monitor
        return monitor


def stop_monitor(reason: str = "monitor stopped") -> None:
    """Stop the running monitor; in drive mode Ganga's own loop takes over again if it was on."""
    global _current
    with _current_lock:
        if _current is not None:
            _current.stop(reason)
            _current = None
