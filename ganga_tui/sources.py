"""What ``ganga-monitor-tui`` watches when it is not running its own demo session.

``--attach PATH`` (or nothing: the sessions found in the runtime directory), ``--mqtt URL``
with ``--session NAME|all``, or ``--replay FILE``; each gives an
:class:`~monitor_core.EventSource`, optionally recorded with ``--record FILE``, shown in the
TUI or, with ``--headless``, as progress lines or JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor_core import EventSource, SourceFailed
from monitor_core.transports.mqtt_options import ALL_SESSIONS, add_mqtt_arguments, mqtt_options_from_args
from monitor_core.transports.recording import RecordingSource, ReplaySource
from monitor_core.transports.socket_source import SocketSource
from monitor_core.transports.unix_socket import DiscoveredSession, discover_sessions, runtime_dir

if TYPE_CHECKING:
    from textual.app import App

__all__ = [
    "REPLAY_CONTROLS",
    "NoSession",
    "add_attach_arguments",
    "bind_replay_keys",
    "build_source",
    "control_replay",
    "run_attached",
]

_PLAIN_EVERY = 2.0


class NoSession(Exception):
    """Nothing to attach to; the text says what was looked for."""


def add_attach_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that choose a running session, a broker or a recording."""
    group = parser.add_argument_group("attach to a running session (default: the ones found on this machine)")
    group.add_argument("--attach", type=Path, default=None, metavar="PATH", help="a session's Unix socket")
    add_mqtt_arguments(group, session_side=False)
    group.add_argument(
        "--session", default=ALL_SESSIONS, metavar="NAME", help="with --mqtt: one session's name, or 'all' (default)"
    )
    group.add_argument("--read-only", action="store_true", help="send no commands (a shared screen)")
    group.add_argument("--record", type=Path, default=None, metavar="FILE", help="record what is watched (.jsonl.gz)")
    group.add_argument("--replay", type=Path, default=None, metavar="FILE", help="play a recording back")
    group.add_argument(
        "--speed",
        type=float,
        default=1.0,
        metavar="X",
        help="with --replay: 1 = recorded pace, 10 = faster, 0 = at once",
    )
    group.add_argument("--step", action="store_true", help="with --replay: start paused, step with '.'")


REPLAY_CONTROLS: dict[str, tuple[str, str]] = {
    "step": ("full_stop", "step one event (pauses)"),
    "pause": ("comma", "pause or resume the replay"),
    "faster": ("greater_than_sign", "replay twice as fast"),
    "slower": ("less_than_sign", "replay half as fast"),
    "forward": ("right_square_bracket", "jump 10 recorded seconds ahead"),
    "back": ("left_square_bracket", "jump 10 recorded seconds back"),
}
"""Replay controls: the name an app action passes to :func:`control_replay`, its key, what it does."""

_SEEK_STEP = 10.0


def _unwrap(source: EventSource | None) -> ReplaySource | None:
    while isinstance(source, RecordingSource):
        source = source.inner
    return source if isinstance(source, ReplaySource) else None


def bind_replay_keys(app: App[Any], source: EventSource | None) -> None:
    """Give an app the replay keys of :data:`REPLAY_CONTROLS` when it watches a replay.

    The app needs an ``action_replay(control)`` that calls :func:`control_replay`.
    """
    if _unwrap(source) is None:
        return
    for name, (key, description) in REPLAY_CONTROLS.items():
        app.bind(key, f"replay('{name}')", description=description, show=False)


def control_replay(source: EventSource | None, control: str) -> str:
    """Apply a replay control (a key of :data:`REPLAY_CONTROLS`) and say what it did.

    Raises:
        ValueError: an unknown control.
    """
    replay = _unwrap(source)
    if replay is None:
        return "replay controls work with --replay"
    if control == "step":
        replay.pause()
        replay.step()
    elif control == "pause":
        if replay.paused:
            replay.resume()
        else:
            replay.pause()
    elif control == "faster":
        replay.set_speed(min((replay.speed or 1.0) * 2, 1024.0))
    elif control == "slower":
        replay.set_speed(max((replay.speed or 1.0) / 2, 1 / 64))
    elif control in ("forward", "back"):
        replay.seek_relative(_SEEK_STEP if control == "forward" else -_SEEK_STEP)
    else:
        raise ValueError(f"unknown replay control {control!r}")
    offset = replay.position - replay.recording.start
    length = replay.recording.end - replay.recording.start
    state = "paused" if replay.paused else f"{replay.speed:g}x"
    damage = f"; {replay.damage}" if replay.damage else ""
    return f"replay {state} at {offset:.1f}s of {length:.1f}s{damage}"


def _one_of(found: list[DiscoveredSession]) -> Path:
    if not found:
        raise NoSession(
            f"no running session found in {runtime_dir(create=False)}; start one with "
            "'ganga-monitor-sim --serve', or pass --attach PATH, --mqtt URL, --replay FILE or --demo"
        )
    if len(found) > 1:
        listing = "\n".join(f"  {item.path}  ({item.session}, pid {item.pid})" for item in found)
        raise NoSession(f"several sessions are running; pick one with --attach:\n{listing}")
    return found[0].path


def build_source(args: argparse.Namespace, *, headless: bool, chosen: Path | None = None) -> EventSource:
    """The source the options name.

    Args:
        args: parsed options.
        headless: the stream ends with the session (a TUI keeps following restarts).
        chosen: a socket picked interactively among several.

    Raises:
        NoSession: nothing to attach to, or several sessions and no way to choose.
        SourceFailed: the target can never give events (no socket at the path, not a recording).
        ValueError: contradictory or malformed options.
    """
    targets = [name for name in ("attach", "mqtt", "replay") if getattr(args, name)]
    if len(targets) > 1:
        raise ValueError(f"choose one of --{', --'.join(targets)}")
    if args.replay is not None and args.record is not None:
        raise ValueError("--record does not go with --replay")
    source: EventSource
    if args.replay is not None:
        if args.speed < 0:
            raise ValueError("--speed cannot be negative")
        source = ReplaySource(args.replay, speed=args.speed, paused=args.step, hold_at_end=not headless)
    elif args.mqtt:
        # Only here: the MQTT client is 6.4 MB of a viewer that does not use it.
        from monitor_core.transports.mqtt_source import MqttSource

        options = mqtt_options_from_args(args)
        assert options is not None
        source = MqttSource(options, args.session, read_only=args.read_only, follow=not headless)
    else:
        path = args.attach or chosen or _one_of(discover_sessions())
        socket_source = SocketSource(
            path, read_only=args.read_only, follow=not headless, kinds=args.events if headless else None
        )
        socket_source.check_target()
        source = socket_source
    if args.record is not None:
        source = RecordingSource(source, args.record)
    return source


def _pick(found: list[DiscoveredSession]) -> Path | None:
    from .screens.session_picker import pick_session

    return pick_session(found)


def run_attached(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run ``ganga-monitor-tui`` on a running session, a broker or a recording."""
    logging.basicConfig(
        level=logging.ERROR, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    chosen: Path | None = None
    wants_discovery = not (args.attach or args.mqtt or args.replay)
    if wants_discovery and not args.headless:
        found = discover_sessions()
        if len(found) > 1:
            chosen = _pick(found)
            if chosen is None:
                return 0
    try:
        source = build_source(args, headless=args.headless, chosen=chosen)
    except (NoSession, SourceFailed) as exc:
        print(f"ganga-monitor-tui: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    if args.headless:
        from .headless import run_headless

        return asyncio.run(
            run_headless(
                source,
                json_lines=args.json,
                until_done=args.until_done,
                until=args.until,
                fail_on=args.fail_on,
                time_limit=args.timeout,
                kinds=args.events,
            )
        )
    from .app import GangaMonitorApp

    async def main() -> int:
        app = GangaMonitorApp(source)
        try:
            await app.run_async()
        finally:
            await source.aclose()
        return app.return_code or 0

    return asyncio.run(main())
