"""The concurrency benchmark: ``python -m benchmarks.run [--quick]``.

Drives the same simulated workloads through five monitoring models (legacy ThreadPool,
Ganga 8.7's asyncio service, and our scheduler on threads, asyncio and subprocess workers),
prints a table and the targets, writes a JSON file to ``benchmarks/results/`` and plots to
``screenshots/``. See ``benchmarks/concurrency/`` for the models and what they are modelled on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path

from .concurrency import report
from .concurrency.orchestrate import run_one
from .concurrency.workloads import MODELS, plan

ROOT = Path(__file__).resolve().parent.parent


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small workloads only (under 2 minutes)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of: " + ", ".join(MODELS))
    parser.add_argument("--workloads", default="", help="comma-separated workload names to run (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="directory for the JSON file")
    parser.add_argument(
        "--screenshots",
        type=Path,
        default=None,
        help="directory for the plots (default: screenshots/ for a full run, benchmarks/results/ otherwise)",
    )
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        default=None,
        help="report earlier result files instead of running (a later file's rows replace an earlier's)",
    )
    return parser.parse_args(argv)


async def run_all(args: argparse.Namespace) -> list[dict[str, object]]:
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s): {', '.join(unknown)}")
    names = {w.strip() for w in args.workloads.split(",") if w.strip()}
    results = []
    for workload in plan(args.quick):
        if names and workload.name not in names:
            continue
        for model in workload.models:
            if model not in wanted:
                continue
            started = time.monotonic()
            print(f"running {workload.name} / {model} ...", file=sys.stderr, flush=True)
            result = await run_one(workload, model)
            result["baseline"] = workload.baseline
            results.append(result)
            print(f"  done in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.monotonic()
    if args.from_json:
        merged: dict[tuple[str, str], dict[str, object]] = {}
        for source in args.from_json:
            for row in json.loads(source.read_text())["results"]:
                merged[(str(row["workload"]), str(row["model"]))] = row
        results = list(merged.values())
    else:
        results = asyncio.run(run_all(args))
    rows = report.targets(results)
    for group, title in report.GROUPS:
        text = report.table(results, group)
        if text.count("\n") > 1:
            print(f"\n{title}\n")
            print(text)
    if any(r.get("fault") for r in results):
        print()
        print(report.fault_table(results))
    print()
    print("Targets:")
    print(report.targets_text(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    mode = "merged" if args.from_json else "quick" if args.quick else "full"
    path = args.out / f"bench-{mode}-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "mode": mode,
                "sources": [str(s) for s in args.from_json or ()],
                "python": platform.python_version(),
                "machine": platform.machine(),
                "elapsed_s": time.monotonic() - started,
                "results": results,
                "targets": [{"target": t, "met": m, "detail": d} for t, m, d in rows],
            },
            indent=1,
        )
    )
    print(f"\nresults: {path}")
    if not args.no_plots:
        plots_dir = args.screenshots or (ROOT / "screenshots" if mode == "full" else args.out)
        for plot in report.plots(results, plots_dir):
            print(f"plot: {plot}")
    print(f"elapsed: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
