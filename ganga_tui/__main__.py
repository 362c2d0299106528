"""Entry point of ``ganga-monitor-tui``."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

# Before Textual is imported (it reads both once); a user's own values win.
# Esc reaches the app 10 ms after it is typed instead of 100 ms (see ganga_tui/_driver.py).
os.environ.setdefault("ESCDELAY", "10")
# A change waits for the screen's next frame slot: at 60 frames a second a key's result waited
# up to 17 ms behind the frame a repaint had just drawn, at 240 up to 4 (keys p95 at 10,000 jobs
# 45 ms against 46-50 at 120, at the same CPU). The app's own repaints are paced at 30 a second,
# so the cap costs nothing when nothing is typed.
os.environ.setdefault("TEXTUAL_FPS", "240")

from monitor_core import StateDirectoryInUse, tune_allocator

from ._cli import build_parser, session_config


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen mode; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # A viewer decodes snapshots tens of MB long: mapped apart, their memory goes back when freed.
    tune_allocator()
    if (args.json or args.until_done or args.until or args.fail_on or args.timeout) and not args.headless:
        parser.error("--json, --until-done, --until, --fail-on and --timeout go with --headless")
    if args.events is not None and not args.json:
        parser.error("--events goes with --headless --json")
    if args.events is not None and (args.until_done or args.until or args.fail_on):
        parser.error("--events does not go with --until, --until-done or --fail-on: they need every job's changes")
    if not args.demo:
        from .sources import run_attached

        return run_attached(parser, args)
    try:
        config = session_config(args)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=logging.ERROR, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if args.headless:
        from .headless import run_demo_headless

        try:
            return asyncio.run(
                run_demo_headless(
                    config,
                    json_lines=args.json,
                    until_done=args.until_done,
                    until=args.until,
                    fail_on=args.fail_on,
                    time_limit=args.timeout,
                    kinds=args.events,
                )
            )
        except StateDirectoryInUse as exc:
            print(f"ganga-monitor-tui: {exc}", file=sys.stderr)
            return 2
    from .app import run_app

    return run_app(config, notifications=args.notify, keep_session=args.keep_session)


if __name__ == "__main__":
    sys.exit(main())
