"""Delay from a Local job's process exit to "completed" in Ganga's registry: Ganga's own loop vs drive mode.

Runs real headless Ganga 8.7.12 sessions, one per (mode, size). Each job sleeps 1 to 2.5 s,
prints the time as its last act and exits; a small hook in the session notes when the
registry says "completed". Prints mean, p99 and max per mode and size, and writes a plot.

    python -m benchmarks.ganga_delay [--sizes 20 200] [--plot screenshots/ganga-delay.png]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SESSION_SCRIPT = r"""
import json, os, sys, threading, time
from GangaCore.GPIDev.Lib.Job.Job import Job as RawJob

mode, count, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
completed_at = {}
lock = threading.Lock()
original = RawJob.updateStatus

def timed(job, new, *args, **kwargs):
    result = original(job, new, *args, **kwargs)
    if job.status == "completed":
        with lock:
            completed_at.setdefault(job.getFQID("."), time.time())
    return result

RawJob.updateStatus = timed
if mode == "drive":
    from monitor_core.ganga import start_monitor
    start_monitor(drive=True, socket_path=os.path.join(os.environ["HOME"], "s.sock"))

jobs = []
submit_started = time.time()
for index in range(count):
    duration = 1.0 + 1.5 * index / max(1, count - 1)
    command = f"sleep {duration:.2f}; python3 -c 'import time; print(repr(time.time()))'"
    job = Job(application=Executable(exe="/bin/sh", args=["-c", command]), backend=Local())
    job.submit()
    jobs.append(job)
submit_seconds = time.time() - submit_started
deadline = time.time() + 300
while any(job.status not in ("completed", "failed", "killed") for job in jobs) and time.time() < deadline:
    time.sleep(0.2)
delays, missing = [], 0
for job in jobs:
    try:
        exited = float(open(os.path.join(job.outputdir, "stdout")).read().split()[-1])
        delays.append(completed_at[job.fqid] - exited)
    except (OSError, KeyError, IndexError, ValueError):
        missing += 1
json.dump({"delays": delays, "missing": missing, "submit_seconds": submit_seconds}, open(out, "w"))
"""


def run_session(mode: str, count: int) -> dict[str, object]:
    """One headless Ganga session; returns the per-job delays it measured."""
    root = Path(tempfile.mkdtemp(prefix="gm-bench-", dir="/tmp"))
    try:
        (root / "home").mkdir()
        (root / "empty.ini").touch()
        script = root / "session.py"
        script.write_text(SESSION_SCRIPT)
        out = root / "result.json"
        command = [
            shutil.which("ganga") or "ganga",
            "--no-prompt",
            f"--config={root / 'empty.ini'}",
            f"-o[Configuration]gangadir={root / 'gangadir'}",
            "-o[PollThread]autostart=True",
            str(script),
            mode,
            str(count),
            str(out),
        ]
        started = time.time()
        completed = subprocess.run(
            command, cwd=root, env={**os.environ, "HOME": str(root / "home")}, capture_output=True, text=True
        )
        if not out.exists():
            raise RuntimeError(
                f"{mode}/{count}: session failed (exit {completed.returncode}):\n{completed.stdout[-3000:]}"
            )
        result: dict[str, object] = json.loads(out.read_text())
        result["wall"] = time.time() - started
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)


def p99(values: list[float]) -> float:
    """Nearest-rank 99th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--plot", type=Path, default=Path("screenshots/ganga-delay.png"))
    args = parser.parse_args()
    labels = {"ganga": "Ganga's own loop", "drive": "drive mode"}
    rows, samples = [], {}
    for count in args.sizes:
        for mode in ("ganga", "drive"):
            result = run_session(mode, count)
            delays = [float(d) for d in result["delays"]]  # type: ignore[attr-defined]
            samples[(mode, count)] = delays
            rows.append((labels[mode], count, delays, result))
            print(f"  ran {labels[mode]} with {count} jobs in {result['wall']:.0f}s", file=sys.stderr, flush=True)
    print("delay from a Local job's process exit to 'completed' in Ganga's registry (seconds)")
    print(f"{'monitoring':<18} {'jobs':>5} {'mean':>7} {'p99':>7} {'max':>7} {'missing':>8} {'submit':>8}")
    for label, count, delays, result in rows:
        mean = sum(delays) / len(delays) if delays else float("nan")
        print(
            f"{label:<18} {count:>5} {mean:>7.3f} {p99(delays):>7.3f} {max(delays):>7.3f} "
            f"{result['missing']:>8} {result['submit_seconds']:>7.1f}s"
        )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return 0
    figure, axes = plt.subplots(1, len(args.sizes), figsize=(5 * len(args.sizes), 3.6), squeeze=False)
    for axis, count in zip(axes[0], args.sizes, strict=True):
        for mode in ("ganga", "drive"):
            delays = sorted(samples[(mode, count)])
            axis.step(delays, [(i + 1) / len(delays) for i in range(len(delays))], where="post", label=labels[mode])
        axis.set_xscale("log")
        axis.set_xlabel("exit -> completed (s, log)")
        axis.set_ylabel("share of jobs")
        axis.set_title(f"{count} Local jobs")
        axis.legend(loc="lower right")
    figure.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.plot, dpi=110)
    print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
