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
DIRAC_SESSION = Path(__file__).resolve().with_name("dirac_session.py")
REPO = Path(__file__).resolve().parents[2]
MODELS = {"ganga-8.7.12": "ganga", "drive": "drive"}


def run_session(model: str, count: int, interval: float, workload: str, backend: str = "Local") -> dict[str, Any]:
    """One headless Ganga session with ``count`` jobs on ``backend``; a result row like the simulated ones.

    ``Dirac`` jobs go to a simulated DIRAC grid through the stand-in DIRAC environment
    (``monitor_core.sim.dirac_env``): Ganga's own Dirac backend code runs unchanged.
    """
    mode = MODELS[model]
    root = Path(tempfile.mkdtemp(prefix="gm-bench-", dir="/tmp"))
    grid = None
    try:
        (root / "home").mkdir()
        (root / "empty.ini").touch()
        out = root / "result.json"
        options = [f"-o[PollThread]{backend}={interval:g}"]
        extra_env: dict[str, str] = {}
        script = SESSION
        if backend == "Dirac":
            from monitor_core.sim.dirac_env import write_dirac_env
            from monitor_core.sim.dirac_grid import DiracGridProcess

            from .lanes import SCALE_LANES

            grid = DiracGridProcess(root / "grid", SCALE_LANES[0].sim_config(1))
            (root / "grid").mkdir()
            address = grid.start()
            dirac = write_dirac_env(root / "dirac", address)
            options += list(dirac.options)
            extra_env = {**dirac.environment, "GM_DIRAC_SERVICE": address}
            script = DIRAC_SESSION
        command = [
            shutil.which("ganga") or "ganga",
            "--no-prompt",
            f"--config={root / 'empty.ini'}",
            f"-o[Configuration]gangadir={root / 'gangadir'}",
            "-o[PollThread]autostart=True",
            *options,
            str(script),
            mode,
            str(count),
            str(interval),
            str(out),
        ]
        environment = {
            **os.environ,
            **extra_env,
            "HOME": str(root / "home"),
            "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO)])),
        }
        started = time.time()
        completed = subprocess.run(
            command, cwd=root, env=environment, capture_output=True, text=True, timeout=900, check=False
        )
        if not out.exists():
            raise RuntimeError(
                f"{model}/{count} {backend} jobs: Ganga session failed (exit {completed.returncode}):\n"
                f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
            )
        data: dict[str, Any] = json.loads(out.read_text())
        wall = time.time() - started
    finally:
        if grid is not None:
            grid.stop()
        shutil.rmtree(root, ignore_errors=True)
    delays = [float(d) for d in data["delays"]]
    collected = [float(d) for d in data.get("results", data["delays"])]
    missing = len(data["missing"])
    lags = [float(v) for v in data["loop_lags"]]
    detection: dict[str, Any] = {
        "jobs": len(delays),
        "undetected": missing,
        "uncollected": missing,
        "p50": percentile(delays, 0.5),
        "p99": percentile(delays, 0.99),
        "max": max(delays) if delays else None,
        "results_p50": percentile(collected, 0.5),
        "results_p99": percentile(collected, 0.99),
        "results_max": max(collected) if collected else None,
        "by_lane": {
            backend.lower(): {
                "jobs": len(delays),
                "p50": percentile(delays, 0.5),
                "p99": percentile(delays, 0.99),
                "results_p99": percentile(collected, 0.99),
            }
        },
        "series": [],
    }
    return {
        "model": model,
        "workload": workload,
        "group": "real",
        "jobs": count,
        "lanes": [backend.lower()],
        "intervals": {backend.lower(): interval},
        "shipped": False,
        "window": wall,
        "measured_s": wall,
        "submit_s": data.get("submit_seconds"),
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
    """``python -m benchmarks.concurrency.ganga_real COUNT INTERVAL [BACKEND]``: both rows, printed as JSON."""
    count, interval = int(sys.argv[1]), float(sys.argv[2])
    backend = sys.argv[3] if len(sys.argv) > 3 else "Local"
    for model in MODELS:
        print(json.dumps(run_session(model, count, interval, f"{backend.lower()}-real-{count}", backend)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
