"""The benchmark runs end to end on its smallest workload and writes its results (no timing checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_headline_workload_confirms_every_job_and_writes_json(tmp_path: Path) -> None:
    models = ("ganga-async", "asyncio", "processes")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--workloads",
            "headline",
            "--models",
            ",".join(models),
            "--out",
            str(tmp_path / "results"),
            "--screenshots",
            str(tmp_path / "plots"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr

    (written,) = (tmp_path / "results").glob("bench-quick-*.json")
    document = json.loads(written.read_text())
    results = {r["model"]: r for r in document["results"]}
    assert set(results) == set(models)
    for model, result in results.items():
        assert result["workload"] == "headline"
        assert result["jobs"] == 25
        assert result["swept"] == 25, f"{model} confirmed {result['swept']} of 25 jobs"
        assert result["sweep_s"] is not None
    assert any(target["target"].startswith("headline: asyncio") for target in document["targets"])
    assert "| headline | asyncio |" in completed.stdout
