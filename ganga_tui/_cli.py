"""Command-line options of ``ganga-monitor-tui``."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from monitor_core import SessionConfig
from monitor_core._session import KNOWN_BACKENDS
from monitor_core.transports import WireError, event_kinds

from .sources import add_attach_arguments
from .wait_contract import Condition, ConditionError

__all__ = ["EXIT_CODES", "build_parser", "session_config"]

EXIT_CODES = {
    0: "every job reached a final status and monitoring lost or mis-stated none",
    1: "monitoring lost a job or reported a status other than the job's true outcome, "
    "or the session ended before the --until condition held",
    2: "bad command-line usage",
    3: "the --timeout passed before the --until condition held",
    4: "a --fail-on condition held",
    5: "the source failed part-way (a damaged recording: the message says where)",
    130: "interrupted (Ctrl-C)",
}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be zero or more")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text}")
    return value


def _seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            number, scale = text[: -len(suffix)], units[suffix]
            break
    else:
        number, scale = text, 1.0
    try:
        value = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration such as 0.3, 300ms, 2m or 2h, got {text!r}") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError("a duration cannot be negative")
    return value


def _backends(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in KNOWN_BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown backend {', '.join(unknown) or '(none given)'}; choose from {', '.join(KNOWN_BACKENDS)}"
        )
    return names


def _event_names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    try:
        event_kinds(names)
    except WireError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return names


def _until(text: str) -> Condition:
    try:
        return Condition.parse(text, default="all")
    except ConditionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fail_on(text: str) -> Condition:
    try:
        return Condition.parse(text, default="any")
    except ConditionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _exit_codes_help() -> str:
    return "exit status:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES.items())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with every flag explained."""
    parser = argparse.ArgumentParser(
        prog="ganga-monitor-tui",
        description=(
            "Watch Ganga job monitoring live: job states, per-backend lag and the queue of "
            "monitoring operations. --demo runs a simulated session (real local processes and a "
            "simulated DIRAC grid) in a process of its own and attaches to it."
        ),
        epilog=_exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_argument_group("what to watch")
    mode.add_argument(
        "--demo",
        action="store_true",
        help="start a simulated session and watch it (the TUI runs it as a child process, "
        "'ganga-monitor-sim --serve', and attaches to its socket; headless runs it in this process)",
    )
    mode.add_argument(
        "--keep-session",
        action="store_true",
        help="with --demo: leave the session running when the TUI quits (attach again with --attach)",
    )
    mode.add_argument("--headless", action="store_true", help="no TUI: print progress lines (or JSON with --json)")
    mode.add_argument("--json", action="store_true", help="with --headless: print one JSON bus event per line")
    mode.add_argument(
        "--events",
        type=_event_names,
        default=None,
        metavar="TYPE[,TYPE...]",
        help="with --headless --json: print only these event types, e.g. Heartbeat,LagSampled (a session "
        "attached to sends only these, and the first snapshot); not with --until, --until-done or --fail-on, "
        "which need every job's changes",
    )
    mode.add_argument(
        "--until-done", action="store_true", help="with --headless: exit once every job is final, with a summary"
    )
    wait = parser.add_argument_group(
        "waiting (with --headless)",
        "CONDITION is [all|any:]SELECTION:STATE with SELECTION all, group:NAME or backend:NAME and STATE final "
        "or a status, e.g. all:final, group:batch003:final, backend:dirac-sim:final, any:failed.",
    )
    wait.add_argument(
        "--until", type=_until, default=None, metavar="CONDITION", help="exit once it holds (--until-done = all:final)"
    )
    wait.add_argument(
        "--fail-on",
        type=_fail_on,
        action="append",
        default=[],
        metavar="CONDITION",
        help="exit with status 4 as soon as it holds (repeatable), e.g. any:failed",
    )
    wait.add_argument(
        "--timeout", type=_seconds, default=None, metavar="DURATION", help="exit with status 3 after it, e.g. 2h"
    )
    mode.add_argument(
        "--notify", action="store_true", help="TUI: bell and desktop notification on failures and finished groups"
    )
    demo = parser.add_argument_group("the simulated session (--demo)")
    demo.add_argument("--jobs", type=_positive_int, default=3000, metavar="N", help="jobs to submit (default 3000)")
    demo.add_argument(
        "--backends",
        "--backend",
        type=_backends,
        default=("local", "dirac-sim"),
        metavar="LIST",
        help=f"comma-separated backends among {', '.join(KNOWN_BACKENDS)} (default local,dirac-sim)",
    )
    demo.add_argument(
        "--latency", type=_seconds, default=0.3, metavar="DURATION", help="median DIRAC call latency (default 0.3s)"
    )
    demo.add_argument(
        "--error-rate", type=_fraction, default=0.0, metavar="F", help="share of DIRAC calls that fail (0-1)"
    )
    demo.add_argument(
        "--hang-rate", type=_fraction, default=0.0, metavar="F", help="share of DIRAC calls that hang (0-1)"
    )
    demo.add_argument(
        "--failure-rate", type=_fraction, default=0.1, metavar="F", help="share of jobs meant to fail (default 0.1)"
    )
    demo.add_argument(
        "--mean-duration", type=_seconds, default=8.0, metavar="DURATION", help="mean running time of a grid job"
    )
    demo.add_argument(
        "--poll-interval", type=_seconds, default=None, metavar="DURATION", help="target poll interval of every backend"
    )
    demo.add_argument(
        "--dirac-client",
        choices=("process", "thread"),
        default="process",
        help="isolate the blocking DIRAC client in subprocess workers (default) or threads",
    )
    demo.add_argument(
        "--dirac-port",
        type=int,
        default=None,
        metavar="PORT",
        help="use a simulated DIRAC service already on this port",
    )
    demo.add_argument(
        "--diracx-url",
        default=None,
        metavar="URL",
        help="watch the unfinished jobs of a real DiracX installation with your `dirac login` tokens "
        "(implies --backend diracx unless --backends names it)",
    )
    demo.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="session state directory; an existing one is resumed (default: a new one per run)",
    )
    demo.add_argument("--seed", type=int, default=7, help="random seed of the workload")
    add_attach_arguments(parser)
    return parser


def default_state_dir() -> Path:
    """A fresh state directory under ``$XDG_STATE_HOME/ganga-monitor``."""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "ganga-monitor"
    return base / f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def session_config(args: argparse.Namespace) -> SessionConfig:
    """The simulated session the options describe.

    Raises:
        ValueError: an inconsistent combination of options.
    """
    return SessionConfig(
        state_dir=args.state_dir or default_state_dir(),
        jobs=args.jobs,
        backends=args.backends if not args.diracx_url or "diracx" in args.backends else ("diracx",),
        diracx_url=args.diracx_url,
        dirac_latency=args.latency,
        dirac_error_rate=args.error_rate,
        dirac_hang_rate=args.hang_rate,
        dirac_port=args.dirac_port,
        dirac_client=args.dirac_client,
        mean_duration=args.mean_duration,
        failure_rate=args.failure_rate,
        poll_interval=args.poll_interval,
        seed=args.seed,
    )
