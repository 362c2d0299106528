"""A model of Ganga's monitoring before its 2022 rewrite: a fixed ThreadPool fed by one loop.

Modelled on ``GangaCore/Core/MonitoringComponent/Local_GangaMC_Service.py`` (still shipped in
Ganga 8.7.12):

* ``JobRegistry_Monitor.run``/``__monStep`` (:577, :655-696): one thread loops every
  ``base_poll_rate`` (2 s, ``GangaCore/__init__.py:429``);
  ``__defaultActiveBackendsFunc`` scans the whole registry for ``submitted``/``running`` jobs
  and ``_checkActiveBackends`` hands each backend's jobs to ``UpdateDict.addEntry``.
* the backend's ``[PollThread]`` rate reaches ``addEntry`` (:1217-1233) only as the entry's
  ``timeoutCounterMax`` (:319-330), a stall counter ``timeoutCheck`` (:380-400) counts down;
  it never delays a sweep. So a backend is swept again at the first loop step after its last
  sweep ended: the old loop's poll interval is ``base_poll_rate``. For equal intervals this
  model's loop step is the lanes' interval; "as shipped", 2 s.
* ``UpdateDict.addEntry`` (:319-368): one queued update action (``JobAction`` on the ``Qin`` queue) per
  backend; while that backend's update runs its ``RLock`` is held, the non-blocking acquire
  fails and the cycle adds nothing, so a backend is swept again only after its last sweep.
* ``MonitoringWorkerThread._execUpdateAction``: ``update_thread_pool_size`` (5) threads take
  actions from ``Qin``; ``_checkBackend`` splits the jobs into bunches of ``[PollThread]
  numParallelJobs`` (25) and calls ``master_updateMonitoringInformation`` on each bunch, one
  after another, catching and logging each bunch's exception.
* per bunch: the DIRAC backend asks about a bunch of 25 in one bulk ``dirac_status`` call (as
  ``monitor_dirac_running_jobs`` still does per chunk, ``GangaDirac/Lib/Backends/DiracBase.py:
  1466``); Local and Batch read one status file per job (``GangaCore/Lib/Localhost/Localhost.py:
  440-472``, ``GangaCore/Lib/Batch/Batch.py:559-595``), here files :mod:`.status_files` writes.
* finished DIRAC jobs are finalised (output sandbox download) by a separate fixed pool of three
  threads, like Ganga 7's ``queues`` worker pool; a Local or Batch job's outputs are on local
  disk when its status file says it ended. No call has a timeout; nothing is isolated.

Ganga 8.7.12 still ships this file but starts ``AsyncMonitoringService`` instead
(``GangaCore/Core/InternalServices/Coordinator.py``), so the ThreadPool loop stays a model.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor_core import EventBus, JobChanged, JobStatus
from monitor_core.backends.dirac_sim import parse_status_answer
from monitor_core.sim import DiracBlockingClient

from .lanes import Submitted
from .recorder import Recorder
from .status_files import STATUS_FILE, job_dir

log = logging.getLogger(__name__)

BASE_POLL_RATE = 2.0
THREAD_POOL_SIZE = 5
NUM_PARALLEL_JOBS = 25
FINALISATION_THREADS = 3
EXITCODE = re.compile(r"^EXITCODE: (?P<exitcode>-?\d*)", re.M)


@dataclass(slots=True)
class GangaJob:
    """The little of a Ganga job these models need."""

    index: int
    lane: int
    backend_id: str
    status: str = "running"
    backend_status: str = "Running"
    been_queued: bool = False


@dataclass(slots=True)
class _Entry:
    job_set: set[int]
    lock: threading.RLock = field(default_factory=threading.RLock)


def publish_change(bus: EventBus, job: GangaJob, lane: str, old: str, new: str, info: str = "") -> None:
    """Put a Ganga job's status change on the bus (from any thread)."""
    job.status = new
    bus.publish_threadsafe(
        JobChanged(
            at=time.time(),
            job_id=str(job.index + 1),
            backend=lane,
            old=JobStatus(old),
            new=JobStatus(new),
            source="poll",
            info=info,
        )
    )


class LegacyModel:
    """The pre-2022 ThreadPool monitoring loop against the simulated services."""

    track_ops = False

    def __init__(
        self,
        lanes: Sequence[Submitted],
        bus: EventBus,
        recorder: Recorder,
        workdir: Path,
        *,
        status_dir: Path | None = None,
        base_poll_rate: float = BASE_POLL_RATE,
    ) -> None:
        self.lanes = lanes
        self.base_poll_rate = base_poll_rate
        self.status_dir = status_dir or workdir / "status"
        self.bus = bus
        self.recorder = recorder
        self.clients = [DiracBlockingClient(port=s.port) for s in lanes]
        self.jobs: list[GangaJob] = []
        self.table: dict[int, _Entry] = {}
        self.table_lock = threading.Lock()
        self.qin: queue.Queue[tuple[Callable[..., None], tuple[Any, ...]]] = queue.Queue()
        self.finalise_queue: queue.Queue[GangaJob] = queue.Queue()
        self.alive = True
        self.enabled = False
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    def loop(self) -> asyncio.AbstractEventLoop:
        """No event loop of its own: the session's main loop is what stays responsive, or not."""
        return asyncio.get_running_loop()

    async def start(self) -> None:
        for number in range(THREAD_POOL_SIZE):
            self._spawn(self._worker, f"MonitoringWorker_{number}")
        for number in range(FINALISATION_THREADS):
            self._spawn(self._finaliser, f"Finaliser_{number}")
        self._spawn(self._main_loop, "JobRegistry_Monitor")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    async def track(self) -> None:
        index = 0
        for lane_index, submitted in enumerate(self.lanes):
            for k in range(submitted.count):
                self.jobs.append(GangaJob(index, lane_index, str(submitted.first_id + k)))
                index += 1
        # enableMonitoring() notifies the main loop's condition: the first step runs at once.
        self.enabled = True
        self._wake.set()

    async def stop(self) -> None:
        self.alive = False

    # -- JobRegistry_Monitor -------------------------------------------------------------------

    def _main_loop(self) -> None:
        while self.alive:
            self._wake.wait(self.base_poll_rate)
            self._wake.clear()
            if self.enabled:
                self._mon_step()

    def _mon_step(self) -> None:
        active: dict[int, list[int]] = {}
        for job in self.jobs:
            if job.status in ("submitted", "running"):
                active.setdefault(job.lane, []).append(job.index)
        for lane, job_indices in active.items():
            self._add_entry(lane, job_indices)

    def _add_entry(self, lane: int, job_indices: list[int]) -> None:
        with self.table_lock:
            entry = self.table.get(lane)
            if entry is None:
                entry = self.table[lane] = _Entry(set(job_indices))
                self.qin.put((self._check_backend, (lane, entry)))
                return
        if entry.lock.acquire(blocking=False):
            try:
                was_empty = not entry.job_set
                entry.job_set.update(job_indices)
                if was_empty:
                    self.qin.put((self._check_backend, (lane, entry)))
            finally:
                entry.lock.release()

    # -- MonitoringWorkerThread --------------------------------------------------------------

    def _worker(self) -> None:
        while self.alive:
            try:
                function, args = self.qin.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                function(*args)
            except Exception:
                log.debug("update action failed", exc_info=True)

    def _check_backend(self, lane: int, entry: _Entry) -> None:
        with entry.lock:
            job_list = [
                self.jobs[i] for i in entry.job_set if self.jobs[i].status in ("submitting", "submitted", "running")
            ]
            entry.job_set = set()
            errors: list[Exception] = []
            for start in range(0, len(job_list), NUM_PARALLEL_JOBS):
                if not self.alive:
                    break
                try:
                    self._update_monitoring_information(lane, job_list[start : start + NUM_PARALLEL_JOBS])
                except Exception as exc:  # noqa: BLE001 - _checkBackend collects every bunch's error
                    errors.append(exc)
            if errors:
                log.debug("monitoring error: %s", errors[0])

    def _update_monitoring_information(self, lane: int, bunch: list[GangaJob]) -> None:
        spec = self.lanes[lane].lane
        if spec.ganga_bulk:
            self._dirac_bunch(lane, bunch)
            return
        for job in bunch:
            path = job_dir(self.status_dir, spec.name, int(job.backend_id) - self.lanes[lane].first_id) / STATUS_FILE
            try:
                text = path.read_text()
            except OSError:
                continue
            self.recorder.mark_confirmed((job.index,))
            match = EXITCODE.search(text)
            if match is not None and job.status == "running":
                code = int(match.group("exitcode"))
                publish_change(self.bus, job, spec.name, "running", "completed" if code == 0 else "failed")
                self.recorder.mark_collected(job.index, time.time())

    def _dirac_bunch(self, lane: int, bunch: list[GangaJob]) -> None:
        client, name = self.clients[lane], self.lanes[lane].lane.name
        ids = [job.backend_id for job in bunch]
        answer = client.getJobStatus([int(i) for i in ids])
        result = parse_status_answer(ids, answer)
        self.recorder.mark_confirmed(job.index for job in bunch)
        by_id = {job.backend_id: job for job in bunch}
        for report in result.reports:
            job = by_id[report.backend_id]
            job.backend_status = report.info.split(":", 1)[0]
            if report.status in (JobStatus.COMPLETED, JobStatus.FAILED) and not job.been_queued:
                job.been_queued = True
                publish_change(self.bus, job, name, job.status, "completing", report.info)
                self.finalise_queue.put(job)

    # -- finalisation pool ---------------------------------------------------------------------

    def _finaliser(self) -> None:
        while self.alive:
            try:
                job = self.finalise_queue.get(timeout=0.5)
            except queue.Empty:
                continue
            client = self.clients[job.lane]
            try:
                client.getOutputSandbox(int(job.backend_id))
                final = "completed" if job.backend_status == "Done" else "failed"
            except Exception:  # noqa: BLE001 - any failure fails the job, as the old pool did
                final = "failed"
            publish_change(self.bus, job, self.lanes[job.lane].lane.name, "completing", final)
            self.recorder.mark_collected(job.index, time.time())
