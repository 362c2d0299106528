"""``python -m benchmarks.live [--quick]``: the demo as a user runs it, measured through tmux.

Runs ``ganga-monitor-tui --demo --jobs N`` in tmux at 200x50 for N = 10,000 and 100,000
(``--quick``: 10,000, capped to fit in 3 minutes), types End, Home, a ``/`` filter, Enter
on a job and Esc through the whole run, and times each key from ``send-keys`` until the
pane shows its result. Also records the session's lag (when the demo serves a socket),
CPU and RSS of every process, and the phases of the run. Prints tables, writes a JSON
document and a plot: ``screenshots/live-benchmark.png`` and ``benchmarks/reference/`` for a
full run, ``benchmarks/results/`` for ``--quick``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from .keys import CYCLE
from .report import figures, plot, profile_table, table
from .run import RunOptions, run_live
from .tmux import INSTALL_HINT

ROOT = Path(__file__).resolve().parents[2]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.live", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="10,000 jobs only, under 3 minutes; results under benchmarks/results/"
    )
    parser.add_argument("--jobs", default=None, help="comma-separated job counts (default 10000,100000; --quick 10000)")
    parser.add_argument(
        "--key-interval", type=float, default=1.0, help="seconds between a key's result and the next key"
    )
    parser.add_argument(
        "--key-timeout",
        type=float,
        default=None,
        help="give up on a key after this long (default 15 s, 8 s with --quick)",
    )
    parser.add_argument(
        "--max-seconds",
        default=None,
        help="quit the TUI after this long, one value or one per job count (default: 110 with --quick, else 1500)",
    )
    parser.add_argument(
        "--keys",
        default="",
        help="comma-separated steps of the key cycle to type (default all: " + ", ".join(s.name for s in CYCLE) + ")",
    )
    parser.add_argument(
        "--command",
        default=None,
        help="a shell command to run instead of the demo ({jobs}, {state_dir}, {runtime} filled in)",
    )
    parser.add_argument("--tail", type=float, default=5.0, help="keep typing this long after every job is final")
    parser.add_argument(
        "--profile", action="store_true", help="also record the TUI (and the session process) with py-spy"
    )
    parser.add_argument(
        "--label", default="", help="the conditions, for the table and the plot (e.g. 'shared machine')"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument("--plot", type=Path, default=None, help="PNG to write")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="keep the raw files here (default: a temporary directory)"
    )
    parser.add_argument(
        "--from-json", type=Path, default=None, help="report an earlier JSON document instead of running"
    )
    parser.add_argument("demo_args", nargs="*", help="after --: more options for ganga-monitor-tui --demo")
    return parser.parse_args(argv)


def _stop_on_sigterm() -> None:
    # Raised in the main thread, so every run's cleanup (quit the TUI, kill its tmux) still happens.
    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    _stop_on_sigterm()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if args.quick:
        out = args.out or ROOT / "benchmarks" / "results" / f"live-quick-{stamp}.json"
        picture = args.plot or ROOT / "benchmarks" / "results" / f"live-quick-{stamp}.png"
    else:
        out = args.out or ROOT / "benchmarks" / "reference" / f"live-{stamp}.json"
        picture = args.plot or ROOT / "screenshots" / "live-benchmark.png"
    if out.is_dir():
        # A directory names where the results go; the file inside it gets the run's name.
        out = out / f"live{'-quick' if args.quick else ''}-{stamp}.json"
    if picture.is_dir():
        picture = picture / f"live{'-quick' if args.quick else ''}-{stamp}.png"
    if args.from_json is not None:
        document = json.loads(args.from_json.read_text())
        print(table(document["runs"], document["label"]))
        print(profile_table(document["runs"]))
        if not args.no_plot:
            plot(document["runs"], picture, document["label"])
            print(f"plot: {picture}")
        return 0
    if shutil.which("tmux") is None:
        print(f"benchmarks.live: tmux not found; {INSTALL_HINT}", file=sys.stderr)
        return 2
    if args.profile and shutil.which("py-spy") is None:
        print("benchmarks.live: --profile needs py-spy: `pip install py-spy`", file=sys.stderr)
        return 2
    keys = tuple(name.strip() for name in args.keys.split(",") if name.strip())
    unknown = sorted(set(keys) - {step.name for step in CYCLE})
    if unknown:
        print(f"benchmarks.live: unknown key step(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    jobs = [int(word) for word in (args.jobs or ("10000" if args.quick else "10000,100000")).split(",") if word.strip()]
    caps = [float(word) for word in (args.max_seconds or ("110" if args.quick else "1500")).split(",") if word.strip()]
    if len(caps) not in (1, len(jobs)):
        print("benchmarks.live: give one --max-seconds, or one per job count", file=sys.stderr)
        return 2
    key_timeout = args.key_timeout if args.key_timeout is not None else (8.0 if args.quick else 15.0)
    label = args.label or ("--quick" if args.quick else "full run")
    label += f"; {platform.node()} {platform.machine()} ({_processor()}), Python {platform.python_version()}"
    if args.profile:
        label += "; profiled with py-spy (timings perturbed)"
    runs = []
    scratch = Path(tempfile.mkdtemp(prefix="ganga-live-")) if args.work_dir is None else args.work_dir
    try:
        for index, count in enumerate(jobs):
            cap = caps[index] if len(caps) > 1 else caps[0]
            print(f"running the demo with {count:,} jobs in tmux ...", file=sys.stderr, flush=True)
            began = time.monotonic()
            record = run_live(
                RunOptions(
                    jobs=count,
                    work_dir=scratch / f"jobs-{count}",
                    key_interval=args.key_interval,
                    key_timeout=key_timeout,
                    max_seconds=cap,
                    tail_seconds=args.tail,
                    demo_args=tuple(args.demo_args),
                    keys=keys,
                    command=args.command,
                    profile=args.profile,
                )
            )
            result = figures(record)
            runs.append(result)
            print(
                f"  {record.stopped or 'stopped'} after {time.monotonic() - began:.0f}s; "
                f"{len(record.keys)} keys timed; exit status {record.exit_status}",
                file=sys.stderr,
                flush=True,
            )
            if record.exit_status not in (0, None) or record.stopped.startswith("the job table"):
                print("  last screen:\n" + record.last_screen, file=sys.stderr)
    finally:
        if args.work_dir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    document = {"label": label, "written": stamp, "argv": sys.argv[1:], "runs": runs}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1, default=str))
    print(table(runs, label))
    profiles = profile_table(runs)
    if profiles:
        print(profiles)
    print(f"\nresults: {out}")
    if not args.no_plot:
        plot(runs, picture, label)
        print(f"plot: {picture}")
    failed = [run for run in runs if not run["keys"]["by_key"]["all keys"]["n"]]
    return 1 if failed else 0


def _processor() -> str:
    """The processor's model as the kernel names it: two runs on different hosts differ by more than a change does."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            fields.setdefault(name.strip(), value.strip())
    except OSError:
        return platform.processor() or "processor unknown"
    model = fields.get("model name", platform.processor() or "processor unknown")
    if "cpu family" in fields and "model" in fields:
        model += f", family {fields['cpu family']} model {fields['model']}"
    return model


if __name__ == "__main__":
    sys.exit(main())
