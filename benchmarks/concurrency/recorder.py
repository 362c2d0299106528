"""What a benchmark run measures, kept in flat arrays so 100,000 jobs cost a few bytes each.

* detection: the wall time each job's first "finished" change reached the bus, against the
  time it finished at its service;
* collection: the wall time each finished job's outputs were in the session (results lag);
* sweep: the time every job had been confirmed once after monitoring began;
* event-loop lag: a ticker task's oversleep;
* CPU seconds and peak RSS of the monitor process and its children (subprocess workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import time
from array import array
from collections.abc import Iterable, Sequence
from typing import Any, Final

import psutil

from monitor_core import EventBus, JobChanged, JobStatus, OpFinished, OpKind, OpQueued, Subscription

FINISHED = frozenset({JobStatus.COMPLETING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.KILLED})
TICK = 0.01
"""Loop-lag ticker period, seconds."""


def percentile(values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile of ``values`` (``share`` in 0..1), or ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


class Recorder:
    """Per-job arrays and counters, written from the loop and, for the Ganga models, threads.

    Args:
        finish: wall time each job ends at its service (``math.inf`` for jobs that do not).
        lane_of: lane index of each job.
        lanes: how many lanes there are.
    """

    def __init__(self, finish: array[float], lane_of: array[int], lanes: int) -> None:
        self.finish = finish
        self.lane_of = lane_of
        self.detected = array("d", bytes(8 * len(finish)))
        self.collected = array("d", bytes(8 * len(finish)))
        self.confirmed = bytearray(len(finish))
        self.confirmed_count = 0
        self.sweep_start: float | None = None
        self.sweep_end: float | None = None
        self._lane_total = [0] * lanes
        for lane in lane_of:
            self._lane_total[lane] += 1
        self.lane_confirmed = [0] * lanes
        """Jobs of each lane confirmed at least once."""
        self.lane_sweep_end: list[float | None] = [None] * lanes
        """When each lane's last job was first confirmed: which lane bounds the sweep."""
        self._lock = threading.Lock()
        self._op_jobs: dict[int, tuple[str, ...]] = {}
        self.loop_lags: list[float] = []
        self.loop_lag_times: list[float] = []
        """Wall time of each loop-lag sample."""

    # -- written by the models -------------------------------------------------------------

    def mark_confirmed(self, indices: Iterable[int], at: float | None = None) -> None:
        """Jobs whose status a backend call just confirmed (any thread)."""
        if self.sweep_end is not None or self.sweep_start is None:
            return
        with self._lock:
            at = at if at is not None else time.time()
            confirmed, lane_of, lane_confirmed = self.confirmed, self.lane_of, self.lane_confirmed
            fresh = 0
            for index in indices:
                if not confirmed[index]:
                    confirmed[index] = 1
                    fresh += 1
                    lane = lane_of[index]
                    lane_confirmed[lane] += 1
                    if lane_confirmed[lane] == self._lane_total[lane]:
                        self.lane_sweep_end[lane] = at
            self.confirmed_count += fresh
            if self.confirmed_count >= len(confirmed) and self.sweep_end is None:
                self.sweep_end = at

    def mark_detected(self, index: int, at: float) -> None:
        """A job's finish reached the bus at wall time ``at``."""
        if self.detected[index] == 0.0:
            self.detected[index] = at

    def mark_collected(self, index: int, at: float) -> None:
        """A finished job's outputs were in the session at wall time ``at`` (any thread)."""
        if self.collected[index] == 0.0:
            self.collected[index] = at

    # -- the bus side ---------------------------------------------------------------------------

    @staticmethod
    def subscribe(bus: EventBus) -> Subscription:
        """The recorder's subscription, never dropping or closing for a backlog."""
        # Only what it reads: taking 100,000 JobAdded off the buffer would cost the measured loop.
        return bus.subscribe(
            max_pending=5_000_000, hard_limit=5_000_000, name="benchmark", kinds=(JobChanged, OpQueued, OpFinished)
        )

    async def consume(self, subscription: Subscription, *, track_ops: bool) -> None:
        """Read the bus: job changes always, operations when ``track_ops`` (our scheduler)."""
        try:
            async for event in subscription:
                if isinstance(event, JobChanged):
                    if event.new in FINISHED:
                        self.mark_detected(int(event.job_id) - 1, event.at)
                    # Our scheduler settles a job (completing -> completed or failed) once its
                    # outputs are in; the Ganga models mark collection themselves.
                    if track_ops and event.old == JobStatus.COMPLETING and event.new.is_final:
                        self.mark_collected(int(event.job_id) - 1, event.at)
                elif not track_ops:
                    continue
                elif isinstance(event, OpQueued):
                    if event.op.kind == OpKind.POLL:
                        self._op_jobs[event.op.op_id] = event.op.job_ids
                elif isinstance(event, OpFinished) and event.kind == OpKind.POLL:
                    if event.outcome == "done":
                        job_ids = self._op_jobs.pop(event.op_id, ())
                        self.mark_confirmed((int(j) - 1 for j in job_ids), event.at)
                    elif event.retry_in is None:
                        self._op_jobs.pop(event.op_id, None)
        finally:
            subscription.close()

    async def tick(self) -> None:
        """Measure how late the loop it runs on wakes a sleeping task, forever."""
        lags, times = self.loop_lags, self.loop_lag_times
        clock = time.perf_counter
        while True:
            before = clock()
            await asyncio.sleep(TICK)
            lags.append(max(0.0, clock() - before - TICK))
            times.append(time.time())

    # -- results ----------------------------------------------------------------------------

    def detection(self, last: float, end: float, lanes: Sequence[str]) -> dict[str, Any]:
        """Detection and results lag of every job that finished by ``last``, censored at ``end``.

        The set is the same for every model: it depends only on when jobs end, not on when a
        model started. A job that ended before monitoring began counts from its end.
        """
        lags: list[float] = []
        results: list[float] = []
        by_lane: dict[str, list[float]] = {name: [] for name in lanes}
        results_by_lane: dict[str, list[float]] = {name: [] for name in lanes}
        series: dict[int, list[float]] = {}
        undetected = uncollected = 0
        first = min((f for f in self.finish if f <= last), default=0.0)
        for index, finished in enumerate(self.finish):
            if finished > last:
                continue
            seen, kept = self.detected[index], self.collected[index]
            if seen == 0.0 or seen > end:
                undetected += 1
                lag = end - finished
            else:
                lag = max(0.0, seen - finished)
            if kept == 0.0 or kept > end:
                uncollected += 1
                result = end - finished
            else:
                result = max(0.0, kept - finished)
            lags.append(lag)
            results.append(result)
            lane = lanes[self.lane_of[index]]
            by_lane[lane].append(lag)
            results_by_lane[lane].append(result)
            series.setdefault(int(finished - first), []).append(lag)
        return {
            "jobs": len(lags),
            "undetected": undetected,
            "uncollected": uncollected,
            "p50": percentile(lags, 0.5),
            "p99": percentile(lags, 0.99),
            "max": max(lags) if lags else None,
            "results_p50": percentile(results, 0.5),
            "results_p99": percentile(results, 0.99),
            "results_max": max(results) if results else None,
            "by_lane": {
                name: {
                    "jobs": len(v),
                    "p50": percentile(v, 0.5),
                    "p99": percentile(v, 0.99),
                    "results_p99": percentile(results_by_lane[name], 0.99),
                }
                for name, v in by_lane.items()
            },
            "series": [[second, max(v), percentile(v, 0.5)] for second, v in sorted(series.items())],
        }


_CHILDREN_EVERY: Final = 2.0
"""Seconds between two searches for the processes a model started (its subprocess workers)."""


class ResourceMeter:
    """CPU seconds and resident memory of this process and its children, sampled on a thread."""

    def __init__(self, period: float = 0.2) -> None:
        self._process = psutil.Process()
        self._period = period
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.peak_rss = 0
        self.baseline_rss = 0
        self._cpu_start = 0.0
        self._known_children: list[psutil.Process] = []
        self._children_at = -math.inf

    def rss(self) -> int:
        """Resident bytes of this process plus its live children."""
        total = self._process.memory_info().rss
        for child in self._children():
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return total

    def _children(self) -> list[psutil.Process]:
        # Finding children reads every process's /proc entry: done every few seconds, not at
        # every sample, so that the meter's thread takes little of the measured loop's time.
        now = time.monotonic()
        if now - self._children_at >= _CHILDREN_EVERY:
            self._children_at = now
            self._known_children = self._process.children(recursive=True)
        return self._known_children

    def cpu(self) -> float:
        """CPU seconds so far: this process, its live children, and its reaped children."""
        times = self._process.cpu_times()
        total = times.user + times.system
        for child in self._process.children(recursive=True):
            try:
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
            except psutil.Error:
                pass
        reaped = os.times()
        return total + reaped.children_user + reaped.children_system

    def start(self) -> None:
        """Take the baseline now and sample the peak until :meth:`stop`."""
        self.baseline_rss = self.peak_rss = self.rss()
        self._cpu_start = self.cpu()
        self._thread = threading.Thread(target=self._sample, name="benchmark-rss", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self._period):
            try:
                self.peak_rss = max(self.peak_rss, self.rss())
            except psutil.Error:
                continue

    def stop(self) -> float:
        """Stop sampling; return CPU seconds since :meth:`start`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_rss = max(self.peak_rss, self.rss())
        return self.cpu() - self._cpu_start
