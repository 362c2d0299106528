"""At equal poll intervals our scheduler detects and collects finished jobs no later than Ganga 8.7's loop.

1,000 jobs on the benchmark's three simulated services, every model polling every lane at
the same interval, a short window. Only the direction is asserted; the figures belong to
the benchmark (``python -m benchmarks.run``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from benchmarks.concurrency.orchestrate import run_one
from benchmarks.concurrency.workloads import scale


@pytest.mark.slow
def test_ours_detects_and_collects_no_later_than_ganga_loop_at_equal_intervals() -> None:
    workload = scale(1000, window=32.0, warmup=5.0, models=("ganga-async", "asyncio"))

    async def both() -> dict[str, dict[str, Any]]:
        return {model: await run_one(workload, model) for model in workload.models}

    results: dict[str, Any] = asyncio.run(both())
    ganga, ours = results["ganga-async"], results["asyncio"]

    assert ganga["intervals"] == ours["intervals"], "the comparison must run every model at the same intervals"
    ganga_lags, our_lags = ganga["detection"], ours["detection"]
    assert our_lags["jobs"] == ganga_lags["jobs"] > 50, "both models must be judged on the same finished jobs"
    assert our_lags["undetected"] == 0, our_lags
    assert our_lags["p99"] <= ganga_lags["p99"], (our_lags["p99"], ganga_lags["p99"])
    assert our_lags["results_p99"] <= ganga_lags["results_p99"], (our_lags["results_p99"], ganga_lags["results_p99"])
