"""Ganga's real code on real processes: Ganga 8.7.12's own monitoring loop against drive mode.

Each row is one headless Ganga 8.7.12 session (started as ``tests/ganga/conftest.py`` does:
scratch HOME, an empty config file, its own gangadir, ``[PollThread]autostart``) running
:mod:`.ganga_session`: real ``Local`` jobs, real processes, Ganga's real
``AsyncMonitoringService`` and ``Localhost.updateMonitoringInformation`` (model
``ganga-8.7.12``), or our scheduler in drive mode handing finished jobs to Ganga's own
completion path (model ``drive``). Both poll Local at the same interval.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .recorder import percentile

SESSION = Path(__file__).resolve().with_name("ganga_session.py")
REPO = Path(__file__).resolve().parents[2]
MODELS = {"ganga-8.7.12": "ganga", "drive": "drive"}


def run_session(model: str, count: int, interval: float, workload: str) -> dict[str, Any]:
    """One headless Ganga session with ``count`` Local jobs; a result row like the simulated ones."""
    mode = MODELS[model]
    root = Path(tempfile.mkdtemp(prefix="gm-bench-", dir="/tmp"))
    try:
        (root / "home").mkdir()
        (root / "empty.ini").touch()
        out = root / "result.json"
        command = [
            shutil.which("ganga") or "ganga",
            "--no-prompt",
            f"--config={root / 'empty.ini'}",
            f"-o[Configuration]gangadir={root / 'gangadir'}",
            "-o[PollThread]autostart=True",
            f"-o[PollThread]Local={interval:g}",
            str(SESSION),
            mode,
            str(count),
            str(interval),
            str(out),
        ]
        environment = {
            **os.environ,
            "HOME": str(root / "home"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        started = time.time()
        completed = subprocess.run(
            command, cwd=root, env=environment, capture_output=True, text=True, timeout=600, check=False
        )
        if not out.exists():
            raise RuntimeError(
                f"{model}/{count}: Ganga session failed (exit {completed.returncode}):\n"
                f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
            )
        data: dict[str, Any] = json.loads(out.read_text())
        wall = time.time() - started
    finally:
        shutil.rmtree(root, ignore_errors=True)
    delays = [float(d) for d in data["delays"]]
    missing = len(data["missing"])
    lags = [float(v) for v in data["loop_lags"]]
    detection: dict[str, Any] = {
        "jobs": len(delays),
        "undetected": missing,
        "uncollected": missing,
        "p50": percentile(delays, 0.5),
        "p99": percentile(delays, 0.99),
        "max": max(delays) if delays else None,
        "results_p50": percentile(delays, 0.5),
        "results_p99": percentile(delays, 0.99),
        "results_max": max(delays) if delays else None,
        "by_lane": {"local": {"jobs": len(delays), "p50": percentile(delays, 0.5), "p99": percentile(delays, 0.99)}},
        "series": [],
    }
    return {
        "model": model,
        "workload": workload,
        "group": "real",
        "jobs": count,
        "lanes": ["local"],
        "intervals": {"local": interval},
        "shipped": False,
        "window": wall,
        "measured_s": wall,
        "submit_s": data["submit_seconds"],
        "start_s": None,
        "adopt_s": None,
        "sweep_s": None,
        "swept": count - missing,
        "sweep_bound_s": None,
        "call_latency_s": None,
        "poll_interval_s": interval,
        "detection": detection,
        "loop_lag_p99_ms": None if not lags else 1000 * (percentile(lags, 0.99) or 0.0),
        "loop_lag_max_ms": None if not lags else 1000 * max(lags),
        "cpu_s": data["cpu_s"],
        "peak_rss": 0,
        "bytes_per_job": None,
        "fault": None,
        "statuses": {s: data["statuses"].count(s) for s in set(data["statuses"])},
    }


def main() -> int:
    """``python -m benchmarks.concurrency.ganga_real COUNT INTERVAL``: both rows, printed as JSON."""
    count, interval = int(sys.argv[1]), float(sys.argv[2])
    for model in MODELS:
        print(json.dumps(run_session(model, count, interval, f"local-real-{count}")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
