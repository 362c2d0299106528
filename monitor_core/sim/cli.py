"""``ganga-monitor-sim``: run a simulated monitoring session that viewers attach to.

``ganga-monitor-sim --jobs 200 --serve`` serves on a Unix socket in the user's runtime
directory (``ganga-monitor-tui`` finds it); ``--mqtt mqtt://host:1883`` also publishes it
through a broker; ``--record FILE`` writes the bus to a compressed recording.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from .._commands import Command, execute_command
from .._events import CommandAcked
from .._lane import SchedulerConfig
from .._memory import tune_allocator
from .._session import KNOWN_BACKENDS, MonitorSession, SessionConfig
from .._state_lock import StateDirectoryInUse
from ..transports.mqtt import MqttBridge, MqttOptions, add_mqtt_arguments, mqtt_options_from_args
from ..transports.recording import BusRecorder
from ..transports.unix_socket import SocketServer, socket_path_for

__all__ = ["build_parser", "main"]

log = logging.getLogger("ganga-monitor-sim")

_SWITCH_INTERVAL = 0.001
"""Seconds a thread may hold the interpreter while another waits for it."""


def _backends(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in KNOWN_BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose backends among {', '.join(KNOWN_BACKENDS)}")
    return names


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be zero or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ganga-monitor-sim``."""
    parser = argparse.ArgumentParser(
        prog="ganga-monitor-sim",
        description="Run a simulated Ganga monitoring session and serve its bus to viewers.",
    )
    work = parser.add_argument_group("the simulated session")
    work.add_argument("--jobs", type=int, default=200, metavar="N", help="jobs to submit (default 200)")
    work.add_argument("--backends", type=_backends, default=("local", "dirac-sim"), metavar="LIST")
    work.add_argument("--latency", type=_non_negative, default=0.3, metavar="S", help="median DIRAC call latency")
    work.add_argument("--error-rate", type=_non_negative, default=0.0, metavar="F")
    work.add_argument("--hang-rate", type=_non_negative, default=0.0, metavar="F", help="DIRAC calls that hang")
    work.add_argument(
        "--dirac-client",
        choices=("process", "thread"),
        default="process",
        help="isolate the blocking DIRAC client in subprocess workers (default) or threads",
    )
    work.add_argument(
        "--dirac-port", type=int, default=None, metavar="PORT", help="a simulated DIRAC service already on this port"
    )
    work.add_argument("--failure-rate", type=_non_negative, default=0.1, metavar="F")
    work.add_argument("--mean-duration", type=_non_negative, default=8.0, metavar="S", help="mean grid job runtime")
    work.add_argument(
        "--local-mean-duration", type=_non_negative, default=2.0, metavar="S", help="mean local job runtime"
    )
    work.add_argument("--poll-interval", type=_non_negative, default=None, metavar="S")
    work.add_argument("--sample-every", type=_non_negative, default=1.0, metavar="S", help="lag/heartbeat period")
    work.add_argument("--seed", type=int, default=7)
    work.add_argument("--name", default=None, help="session name (default sim-<time>-<pid>)")
    work.add_argument("--state-dir", type=Path, default=None, metavar="DIR", help="resumed when it exists")
    serve = parser.add_argument_group("serving")
    serve.add_argument("--serve", action="store_true", help="serve on a Unix socket in the runtime directory")
    serve.add_argument("--socket", type=Path, default=None, metavar="PATH", help="serve on this socket path instead")
    serve.add_argument("--read-only", action="store_true", help="refuse viewers' commands")
    serve.add_argument(
        "--ready-fd",
        type=int,
        default=None,
        metavar="FD",
        help="write 'step WHAT' and a newline to this file descriptor as each step of the start begins, "
        "then, once serving, 'ready SOCKET' and close it (how ganga-monitor-tui --demo knows its session is up)",
    )
    serve.add_argument("--record", type=Path, default=None, metavar="FILE", help="record the bus (.jsonl.gz)")
    add_mqtt_arguments(serve, session_side=True)
    end = parser.add_argument_group("ending")
    end.add_argument("--exit-when-done", action="store_true", help="stop once every job is final")
    end.add_argument("--linger", type=_non_negative, default=0.5, metavar="S", help="serve this long after done")
    end.add_argument("--summary", type=Path, default=None, metavar="FILE", help="write final states as JSON here")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return parser


def _default_state_dir(name: str) -> Path:
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "ganga-monitor"
    return base / name


async def run(args: argparse.Namespace, mqtt: MqttOptions | None) -> int:
    """Run the session and its servers until done or signalled; return the exit status."""
    name = args.name or (
        args.state_dir.name if args.state_dir else f"sim-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    )
    state_dir = args.state_dir or _default_state_dir(name)
    if state_dir.name != name:
        state_dir = state_dir / name
    config = SessionConfig(
        state_dir=state_dir,
        jobs=args.jobs,
        backends=args.backends,
        dirac_latency=args.latency,
        dirac_error_rate=min(args.error_rate, 1.0),
        dirac_hang_rate=min(args.hang_rate, 1.0),
        dirac_port=args.dirac_port,
        dirac_client=args.dirac_client,
        failure_rate=min(args.failure_rate, 1.0),
        mean_duration=args.mean_duration,
        local_mean_duration=args.local_mean_duration,
        poll_interval=args.poll_interval or None,
        seed=args.seed,
        scheduler=replace(SchedulerConfig(), sample_every=args.sample_every or 1.0),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    socket_server: SocketServer | None = None
    bridge: MqttBridge | None = None
    reason = "session stopped"
    announcer = _Announcer(args.ready_fd)
    async with AsyncExitStack() as stack:
        stack.callback(announcer.close)
        session = await stack.enter_async_context(MonitorSession(config, on_step=announcer.step))
        scheduler = session.scheduler
        assert scheduler is not None

        def execute(command: Command) -> CommandAcked:
            return execute_command(scheduler, command)

        description = f"{args.jobs} simulated jobs on {','.join(args.backends)}, pid {os.getpid()}"
        if args.record is not None:
            await stack.enter_async_context(BusRecorder(session.bus, args.record))
        if args.serve or args.socket is not None:
            socket_server = SocketServer(
                session.bus,
                session=name,
                path=args.socket or socket_path_for(name),
                execute=execute,
                read_only=args.read_only,
                description=description,
            )
            await stack.enter_async_context(socket_server)
            print(f"ganga-monitor-sim: session {name} serving on {socket_server.path}", file=sys.stderr, flush=True)
        if mqtt is not None:
            bridge = MqttBridge(session.bus, mqtt, session=name, execute=execute, read_only=args.read_only)
            await stack.enter_async_context(bridge)
            print(f"ganga-monitor-sim: session {name} publishing to {mqtt.describe()}", file=sys.stderr, flush=True)
        announcer.ready(socket_server.path if socket_server is not None else None)
        waiters: list[asyncio.Task[Any]] = [asyncio.create_task(stop.wait())]
        if args.exit_when_done:
            waiters.append(asyncio.create_task(scheduler.wait_all_final()))
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        if stop.is_set():
            reason = "session interrupted"
        else:
            reason = "every job is final"
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.linger):
                    await stop.wait()
        scheduler.sample()
        summary = session.summary()
        final_states = {job_id: job.status.value for job_id, job in scheduler.jobs.items()}
        # Ending the scheduler publishes SessionEnded while the servers still run, so viewers hear it.
        await scheduler.aclose(reason)
        if args.summary is not None:
            document: dict[str, Any] = {
                "session": name,
                "summary": summary.to_dict(),
                "final_states": final_states,
                "socket": None if socket_server is None else _server_figures(socket_server),
                "mqtt": None if bridge is None else bridge.statistics(),
            }
            args.summary.write_text(json.dumps(document, indent=1, default=str))
    return 0 if summary.ok or not args.exit_when_done else 1


class _Announcer:
    """Tells the process that started us (``--ready-fd``) each step of the start, then that viewers can attach.

    One line each: ``step WHAT`` as a step begins, then ``ready SOCKET``, and the pipe is
    closed. A parent that has gone away costs a warning, never the session.
    """

    def __init__(self, fd: int | None) -> None:
        self._stream: TextIO | None = None
        if fd is not None:
            try:
                self._stream = os.fdopen(fd, "w")
            except OSError as exc:
                log.warning("cannot tell the parent how the start goes on fd %d: %s", fd, exc)

    def step(self, what: str) -> None:
        self._write(f"step {what}")

    def ready(self, socket: Path | None) -> None:
        self._write(f"ready {socket or ''}")
        self.close()

    def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(OSError):
                self._stream.close()
            self._stream = None

    def _write(self, line: str) -> None:
        if self._stream is None:
            return
        try:
            self._stream.write(line.replace("\n", " ") + "\n")
            self._stream.flush()
        except OSError as exc:
            log.warning("cannot tell the parent how the start goes: %s", exc)
            self.close()


def _server_figures(server: SocketServer) -> dict[str, Any]:
    stats = server.statistics()
    return {
        "connections_total": stats.connections_total,
        "refused_peers": stats.refused_peers,
        "commands_ok": stats.commands_ok,
        "commands_refused": stats.commands_refused,
        "rejected": stats.rejected,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ganga-monitor-sim``."""
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["dirac-env"]:
        from .dirac_env import main as dirac_env_main

        return dirac_env_main(arguments[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        mqtt = mqtt_options_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    # The loop shares the interpreter with the threads that write the store, files and
    # snapshots: each time it gives up the lock for a system call it waits up to a switch
    # interval to get it back, so a shorter one (5 ms by default) shortens its stalls.
    sys.setswitchinterval(_SWITCH_INTERVAL)
    tune_allocator()
    try:
        return asyncio.run(run(args, mqtt))
    except (ValueError, FileExistsError, StateDirectoryInUse) as exc:
        print(f"ganga-monitor-sim: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
