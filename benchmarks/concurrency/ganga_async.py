"""A model of the asyncio monitoring Ganga ships today (8.7.x).

Modelled on Ganga 8.7.12:

* ``GangaCore/Core/MonitoringComponent/MonitoringService.py``, ``AsyncMonitoringService``: a
  thread running its own asyncio loop. ``_check_active_backends`` runs every ``base_poll_rate``
  (2 s), scans the whole job registry for ``submitted``/``running`` jobs and starts
  ``_check_backend`` for each newly active backend; ``_check_backend`` calls the backend's
  ``master_updateMonitoringInformation`` and re-arms itself with ``call_later`` after the
  backend's ``[PollThread]`` rate (Local 10 s, LSF/PBS 20 s, Condor 30 s, Dirac 50 s),
  whether or not the previous round has finished: no in-flight limit, no timeouts.
  (8.7.12 passes the *last scanned job's* backend to ``_check_backend`` for every newly found
  backend name, which can leave other backends unmonitored; the model starts each backend's
  own check, as intended.)
* ``run_monitoring_task``: a coroutine backend method becomes a task on the loop; a plain one
  runs in the service's ``ThreadPoolExecutor(update_thread_pool_size=5)``, shared by all
  blocking backends.
* ``GangaDirac/Lib/Backends/DiracBase.py``: ``updateMonitoringInformation`` splits the jobs
  into chunks of ``[DIRAC] numParallelJobs`` (1000, capped here at the service's bulk limit)
  and awaits ``monitor_dirac_running_jobs`` for each chunk one after another; a
  ``GangaDiracError`` abandons the remaining chunks. Finished jobs go to
  ``requeue_dirac_finished_jobs`` -> ``job_finalisation`` tasks on the same loop, which run
  ``complete_dirac_job`` (per-job ``getStateTime``, ``updateStatus('completing')``, the
  ``finished_job`` sandbox download, ``getStateTime``, ``updateStatus('completed')``) or
  ``finalise_failed_job``; a failed finalisation is retried after ``time.sleep(2.5)``, which
  blocks the loop.
* ``GangaDirac/Lib/Server/DiracProcessManager.py``, ``AsyncDiracManager.execute``: each DIRAC
  command is queued to a DIRAC process that runs it on a ``ThreadPoolExecutor()`` (default
  size), and ``get_task_result`` polls for the answer every 0.3 s. Modelled with a thread
  pool of the same default size running the sim's blocking client, polled every 0.3 s.
* ``GangaCore/Lib/Localhost/Localhost.py`` (coroutine) and ``GangaCore/Lib/Batch/Batch.py``
  (plain function) update one job at a time, reading its status file; modelled as one
  ``getJobStatus([id])`` call per job, awaited one after another (Local, via the sim's
  asyncio client) or made blocking in the shared thread pool (Batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from monitor_core import EventBus, JobStatus
from monitor_core.backends._base import BackendError
from monitor_core.backends.dirac_sim import parse_status_answer
from monitor_core.sim import DiracAsyncClient, DiracBlockingClient

from .lanes import Submitted
from .legacy import GangaJob, publish_change
from .recorder import Recorder

log = logging.getLogger(__name__)

POLL_RATE = 2.0
THREAD_POOL_SIZE = 5
DIRAC_NUM_PARALLEL_JOBS = 1000
RESULT_POLL = 0.3
FINALISATION_LIMIT = 5
FINALISATION_SLEEP = 2.5
DIRAC_FINAL = frozenset({"Done", "Failed", "Killed", "Deleted"})


class GangaDiracError(Exception):
    """What ``AsyncDiracManager.execute`` raises for any failed command."""


class GangaAsyncModel:
    """``AsyncMonitoringService`` with DIRAC, Batch and Local style backends."""

    track_ops = False

    def __init__(self, lanes: Sequence[Submitted], bus: EventBus, recorder: Recorder, workdir: Path) -> None:
        self.lanes = lanes
        self.bus = bus
        self.recorder = recorder
        self.blocking = [DiracBlockingClient(port=s.port) for s in lanes]
        self.jobs: list[GangaJob] = []
        self.enabled = False
        self.active_backends: dict[int, list[GangaJob]] = {}
        self.thread_executor = ThreadPoolExecutor(max_workers=THREAD_POOL_SIZE, thread_name_prefix="ganga-mon")
        self.dirac_executor = ThreadPoolExecutor(thread_name_prefix="dirac-process")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="AsyncMonitoringService", daemon=True)
        self._async_clients: list[DiracAsyncClient] = []

    def loop(self) -> asyncio.AbstractEventLoop:
        """The service's own loop, in its own thread."""
        return self._loop

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    async def start(self) -> None:
        self._thread.start()
        self._async_clients = [DiracAsyncClient(port=s.port) for s in self.lanes]

    async def track(self) -> None:
        index = 0
        for lane_index, submitted in enumerate(self.lanes):
            for k in range(submitted.count):
                self.jobs.append(GangaJob(index, lane_index, str(submitted.first_id + k)))
                index += 1
        self.enabled = True
        self._loop.call_soon_threadsafe(self._check_active_backends)

    async def stop(self) -> None:
        self.enabled = False
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._loop.stop)
        self.thread_executor.shutdown(wait=False, cancel_futures=True)
        self.dirac_executor.shutdown(wait=False, cancel_futures=True)

    # -- AsyncMonitoringService ----------------------------------------------------------------

    def _check_active_backends(self) -> None:
        if not self.enabled:
            return
        found: dict[int, list[GangaJob]] = {}
        for job in self.jobs:
            if job.status in ("submitted", "running"):
                found.setdefault(job.lane, []).append(job)
        previously = self.active_backends
        self.active_backends = found
        for lane in found:
            if lane not in previously:
                self._check_backend(lane)
        self._loop.call_later(POLL_RATE, self._check_active_backends)

    def _check_backend(self, lane: int) -> None:
        if not self.enabled or lane not in self.active_backends:
            return
        self._master_update_monitoring_information(lane, self.active_backends[lane])
        self._loop.call_later(self.lanes[lane].lane.ganga_rate, self._check_backend, lane)

    def _master_update_monitoring_information(self, lane: int, jobs: list[GangaJob]) -> None:
        kind = self.lanes[lane].lane.kind
        if kind == "Dirac":
            self._run_monitoring_task(functools.partial(self._dirac_update, lane), jobs, is_async=True)
        elif kind == "Local":
            self._run_monitoring_task(functools.partial(self._local_update, lane), jobs, is_async=True)
        else:
            self._run_monitoring_task(functools.partial(self._batch_update, lane), jobs, is_async=False)

    def _run_monitoring_task(self, task: Callable[..., Any], jobs: list[GangaJob], *, is_async: bool) -> None:
        if is_async:
            self._loop.create_task(_log_exceptions(task(jobs)))
        else:
            self._loop.create_task(_log_exceptions(self._loop.run_in_executor(self.thread_executor, task, jobs)))

    # -- AsyncDiracManager ---------------------------------------------------------------------

    async def _dirac_execute(self, lane: int, method: str, *args: Any) -> Any:
        client = self.blocking[lane]
        future = self._loop.run_in_executor(self.dirac_executor, functools.partial(getattr(client, method), *args))
        # get_task_result polls the shared result dict every 0.3 s.
        while not future.done():  # noqa: ASYNC110
            await asyncio.sleep(RESULT_POLL)
        try:
            answer = future.result()
        except Exception as exc:
            raise GangaDiracError(str(exc)) from exc
        if not isinstance(answer, dict) or not answer.get("OK"):
            raise GangaDiracError(str(answer.get("Message") if isinstance(answer, dict) else answer))
        return answer

    # -- DiracBase -----------------------------------------------------------------------------

    async def _dirac_update(self, lane: int, jobs: list[GangaJob]) -> None:
        interesting = [j for j in jobs if not j.been_queued]
        monitor = [j for j in interesting if j.backend_status not in DIRAC_FINAL]
        requeue = [j for j in interesting if j.backend_status in DIRAC_FINAL]
        chunk = min(DIRAC_NUM_PARALLEL_JOBS, self.lanes[lane].lane.max_bulk)
        try:
            self._requeue_finished(lane, requeue)
            for start in range(0, len(monitor), chunk):
                await self._monitor_dirac_running_jobs(lane, monitor[start : start + chunk])
        except GangaDiracError:
            log.debug("Error in Monitoring Loop, jobs on the DIRAC backend may not update")

    async def _monitor_dirac_running_jobs(self, lane: int, jobs: list[GangaJob]) -> None:
        ids = [j.backend_id for j in jobs]
        answer = await self._dirac_execute(lane, "getJobStatus", [int(i) for i in ids])
        try:
            result = parse_status_answer(ids, answer)
        except BackendError as exc:
            raise GangaDiracError(str(exc)) from exc
        self.recorder.mark_confirmed(j.index for j in jobs)
        by_id = {j.backend_id: j for j in jobs}
        requeue = []
        for report in result.reports:
            job = by_id[report.backend_id]
            if job.been_queued:
                continue
            job.backend_status = report.info.split(":", 1)[0]
            if job.backend_status in DIRAC_FINAL and job.status == "running":
                requeue.append(job)
        self._requeue_finished(lane, requeue)

    def _requeue_finished(self, lane: int, jobs: list[GangaJob]) -> None:
        for job in jobs:
            if job.been_queued or job.backend_status not in DIRAC_FINAL:
                continue
            job.been_queued = True
            self._loop.create_task(self._job_finalisation(lane, job))

    async def _job_finalisation(self, lane: int, job: GangaJob) -> None:
        count = 1
        while count != FINALISATION_LIMIT:
            count += 1
            if job.status in ("completed", "failed", "killed", "removed"):
                break
            job.been_queued = True
            task = self._loop.create_task(self._internal_job_finalisation(lane, job))
            with contextlib.suppress(GangaDiracError):
                await task
            if task.exception() is None:
                break
            if count == FINALISATION_LIMIT:
                publish_change(self.bus, job, self.lanes[lane].lane.name, job.status, "failed")
                break
            # DiracBase.job_finalisation sleeps with time.sleep on the loop's thread.
            time.sleep(FINALISATION_SLEEP)  # noqa: ASYNC251 - modelled as Ganga does it
        job.been_queued = False

    async def _internal_job_finalisation(self, lane: int, job: GangaJob) -> None:
        name = self.lanes[lane].lane.name
        if job.backend_status == "Done":
            await self._dirac_execute(lane, "getJobStatus", [int(job.backend_id)])  # getStateTime
            if job.status != "completing":
                publish_change(self.bus, job, name, job.status, "completing")
            await self._dirac_execute(lane, "getOutputSandbox", int(job.backend_id))  # finished_job
            await self._dirac_execute(lane, "getJobStatus", [int(job.backend_id)])  # getStateTime
            publish_change(self.bus, job, name, "completing", "completed")
        else:
            await self._dirac_execute(lane, "getJobStatus", [int(job.backend_id)])  # getStateTime
            await self._dirac_execute(lane, "getOutputSandbox", int(job.backend_id))
            publish_change(self.bus, job, name, job.status, "failed")

    # -- Localhost (coroutine) and Batch (plain function) -------------------------------------

    async def _local_update(self, lane: int, jobs: list[GangaJob]) -> None:
        client, name = self._async_clients[lane], self.lanes[lane].lane.name
        for job in jobs:
            answer = await client.getJobStatus([int(job.backend_id)])
            self._apply_single(job, name, answer)

    def _batch_update(self, lane: int, jobs: list[GangaJob]) -> None:
        client, name = self.blocking[lane], self.lanes[lane].lane.name
        for job in jobs:
            answer = client.getJobStatus([int(job.backend_id)])
            self._apply_single(job, name, answer)

    def _apply_single(self, job: GangaJob, name: str, answer: Any) -> None:
        result = parse_status_answer([job.backend_id], answer)
        self.recorder.mark_confirmed((job.index,))
        for report in result.reports:
            if job.status == "running" and report.status in (JobStatus.COMPLETED, JobStatus.FAILED):
                publish_change(self.bus, job, name, "running", str(report.status), report.info)


async def _log_exceptions(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception as exc:  # noqa: BLE001 - Ganga logs and carries on
        log.debug("monitoring task failed: %s", exc)
