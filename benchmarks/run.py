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
import subprocess
import sys
import time
from pathlib import Path

from .concurrency import report
from .concurrency.ganga_real import run_session
from .concurrency.orchestrate import run_one
from .concurrency.workloads import MODELS, REAL_MODELS, RealWorkload, plan

ROOT = Path(__file__).resolve().parent.parent


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small workloads only (under 2 minutes)")
    everything = (*MODELS, *REAL_MODELS)
    parser.add_argument(
        "--models", default=",".join(everything), help="comma-separated subset of: " + ", ".join(everything)
    )
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


failures: list[str] = []
"""Rows that could not be measured in this run, with the reason."""


async def run_all(args: argparse.Namespace) -> list[dict[str, object]]:
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in (*MODELS, *REAL_MODELS)]
    if unknown:
        raise SystemExit(f"unknown model(s): {', '.join(unknown)}")
    names = {w.strip() for w in args.workloads.split(",") if w.strip()}
    results: list[dict[str, object]] = []
    for workload in plan(args.quick):
        if names and workload.name not in names:
            continue
        for model in workload.models:
            if model not in wanted:
                continue
            started = time.monotonic()
            print(f"running {workload.name} / {model} ...", file=sys.stderr, flush=True)
            try:
                if isinstance(workload, RealWorkload):
                    result = await asyncio.to_thread(
                        run_session, model, workload.jobs, workload.interval, workload.name, workload.backend
                    )
                else:
                    result = await run_one(workload, model)
                    result["baseline"] = workload.baseline
            except (RuntimeError, OSError, ImportError, subprocess.SubprocessError) as exc:
                # One model that cannot finish must not cost the other rows; it is reported.
                print(f"  FAILED: {exc}", file=sys.stderr, flush=True)
                failures.append(f"{workload.name} / {model}: {str(exc)[:300]}")
                continue
            results.append(result)
            # Kept row by row, so that a run cut short still leaves what it measured.
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "bench-partial.json").write_text(json.dumps({"results": results, "failures": failures}))
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
                "failures": failures,
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
    for failure in failures:
        print(f"not measured: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
