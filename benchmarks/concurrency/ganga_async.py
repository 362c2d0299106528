"""A model of the asyncio monitoring Ganga ships today (8.7.12), step by step.

Each step names the Ganga 8.7.12 file and line it copies (paths under ``site-packages/ganga``):

* ``GangaCore/Core/MonitoringComponent/MonitoringService.py``, ``AsyncMonitoringService``: a
  thread running its own asyncio loop (:41-44). ``_check_active_backends`` (:46-92) scans the
  whole registry for ``submitted``/``running`` jobs every ``base_poll_rate`` (2 s,
  ``GangaCore/__init__.py:429``) and, for each backend name newly found active, calls
  ``_check_backend(backend_obj)`` (:82-85) where ``backend_obj`` is the backend of the *last
  job scanned*: backends that become active in the same scan all start the last one's check,
  and the others are never checked (kept here: ``together=True``). ``_check_backend`` (:112-121)
  calls ``master_updateMonitoringInformation`` and re-arms itself with ``call_later`` after the
  backend's rate (:123-131) whether or not the round has finished: no in-flight limit, no timeout.
* ``run_monitoring_task`` (:104-110): a coroutine becomes a task on the loop; a plain function
  runs in the service's ``ThreadPoolExecutor(update_thread_pool_size=5)`` (:43, :133-135).
* ``GangaDirac/Lib/Backends/DiracBase.py``: ``updateMonitoringInformation`` (:1547-1604) splits
  the jobs not ``been_queued`` into those whose last DIRAC status is final (requeued for
  finalisation at once, :1587, :1596-1598) and the rest, polled in chunks of ``[DIRAC]
  numParallelJobs`` (1000, ``GangaDirac/__init__.py:60``; capped here at the service's bulk
  limit) awaited one after another (:1599-1601); a ``GangaDiracError`` abandons the remaining
  chunks (:1602-1604). ``monitor_dirac_running_jobs`` (:1429-1544) makes one ``dirac_status``
  call per chunk (:1466) and stores each job's DIRAC status (:1490); a job Ganga has as
  ``running`` whose DIRAC status is final is *not* finalised in this poll (:1504-1505 only act on
  jobs not ``running``): it waits for the next poll of the backend, which requeues it (:1587).
* ``requeue_dirac_finished_jobs`` (:1400-1425) creates a ``job_finalisation`` task per job on the
  same loop; ``job_finalisation`` (:1291-1350) retries a failed finalisation up to 5 times with
  ``time.sleep(2.5)`` on the loop's thread (:1348). ``complete_dirac_job`` (:1130-1275):
  ``_getStateTime(job, 'completing')`` asks DIRAC for the ``running`` and ``completing`` times
  (:1016-1041, two calls, :1035), ``updateStatus('completing')`` (:1140), ``finished_job``
  downloads the output sandbox (:1150), ``updateStatus('completed')`` (:1275, the completed time
  comes with ``finished_job``'s answer, :1168, :1270). ``finalise_failed_job`` (:1102-1127):
  ``_getStateTime(job, 'failed')`` makes the two awaited calls and then a *blocking*
  ``execute("getStateTime(...)")`` on the loop's thread for ``completed`` (:1019-1027;
  ``GangaDirac/Lib/Utilities/DiracUtilities.py:196``), ``updateStatus('failed')`` (:1109), then
  ``getOutputSandbox`` (:1114-1125, ``failed_sandbox_download`` is on by default,
  ``GangaDirac/__init__.py:63``).
* ``GangaDirac/Lib/Server/DiracProcessManager.py``, ``AsyncDiracManager.execute`` (:94-118):
  each DIRAC command is queued to the DIRAC process, which runs it on a ``ThreadPoolExecutor()``
  of the default size, and ``get_task_result`` (:120-127) polls for the answer every 0.3 s.
  Modelled with a thread pool of that default size running the sim's blocking client, polled
  every 0.3 s.
* ``GangaCore/Lib/Localhost/Localhost.py``, ``updateMonitoringInformation`` (:408-474, a
  coroutine): one job after another, reads its ``__jobstatus__`` file with ``aiofile`` (:411-414,
  :446) and marks it ``completed``/``failed`` when an ``EXITCODE`` line is there (:465-472).
  The same here, on files :mod:`.status_files` writes when the job ends.
* ``GangaCore/Lib/Batch/Batch.py``, ``updateMonitoringInformation`` (:504-595, a plain
  function, so in the shared pool of 5 threads): per job, reads ``__jobstatus__`` (:531-532,
  :565) and, while it runs, the heartbeat file's age (:590); the same here.

For Local and Batch, outputs are on local disk when the status says so: the job counts as
collected when it is marked ``completed``/``failed``. For Dirac, after the sandbox download.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiofile import async_open

from monitor_core import EventBus
from monitor_core.backends._base import BackendError
from monitor_core.backends.dirac_sim import parse_status_answer
from monitor_core.sim import DiracBlockingClient

from .lanes import Submitted
from .legacy import GangaJob, publish_change
from .recorder import Recorder
from .status_files import STATUS_FILE, job_dir

log = logging.getLogger(__name__)

POLL_RATE = 2.0
THREAD_POOL_SIZE = 5
DIRAC_NUM_PARALLEL_JOBS = 1000
RESULT_POLL = 0.3
FINALISATION_LIMIT = 5
FINALISATION_SLEEP = 2.5
DIRAC_FINAL = frozenset({"Done", "Failed", "Killed", "Deleted"})
EXITCODE = re.compile(r"^EXITCODE: (?P<exitcode>-?\d*)", re.M)


class GangaDiracError(Exception):
    """What ``AsyncDiracManager.execute`` raises for any failed command."""


class GangaAsyncModel:
    """``AsyncMonitoringService`` with DIRAC, Batch and Local backends.

    Args:
        intervals: each lane's ``[PollThread]`` rate for this run.
        status_dir: where the Local and Batch lanes' status files are.
        together: every backend is first seen in the same registry scan (Ganga's bug bites);
            otherwise each lane's jobs enter the registry one scan after the previous lane's.
    """

    track_ops = False

    def __init__(
        self,
        lanes: Sequence[Submitted],
        bus: EventBus,
        recorder: Recorder,
        workdir: Path,
        *,
        intervals: Mapping[str, float] | None = None,
        status_dir: Path | None = None,
        together: bool = False,
    ) -> None:
        self.lanes = lanes
        self.bus = bus
        self.recorder = recorder
        self.rates = [(intervals or {}).get(s.lane.name, s.lane.ganga_rate) for s in lanes]
        self.status_dir = status_dir or workdir / "status"
        self.together = together
        self.blocking = [DiracBlockingClient(port=s.port) for s in lanes]
        self.jobs: list[GangaJob] = []
        self.enabled = False
        self.active_backends: dict[int, list[GangaJob]] = {}
        self.thread_executor = ThreadPoolExecutor(max_workers=THREAD_POOL_SIZE, thread_name_prefix="ganga-mon")
        self.dirac_executor = ThreadPoolExecutor(thread_name_prefix="dirac-process")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="AsyncMonitoringService", daemon=True)

    def loop(self) -> asyncio.AbstractEventLoop:
        """The service's own loop, in its own thread."""
        return self._loop

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    async def start(self) -> None:
        self._thread.start()

    async def track(self) -> None:
        index = 0
        for lane_index, submitted in enumerate(self.lanes):
            batch = []
            for k in range(submitted.count):
                batch.append(GangaJob(index, lane_index, str(submitted.first_id + k)))
                index += 1
            if self.together or lane_index == 0:
                self._loop.call_soon_threadsafe(self.jobs.extend, batch)
            else:
                delay = lane_index * (POLL_RATE + 0.1)
                self._loop.call_soon_threadsafe(self._loop.call_later, delay, self.jobs.extend, batch)
        self.enabled = True
        # enable() -> call_soon_threadsafe(_check_active_backends) (MonitoringService.py:218).
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
        backend_obj: int | None = None
        for job in self.jobs:
            if job.status in ("submitted", "running"):
                found.setdefault(job.lane, []).append(job)
                backend_obj = job.lane
        previously = self.active_backends
        self.active_backends = found
        for lane in found:
            if lane not in previously and backend_obj is not None:
                # MonitoringService.py:85 passes the last scanned job's backend, not ``lane``'s.
                self._check_backend(backend_obj)
        self._loop.call_later(POLL_RATE, self._check_active_backends)

    def _check_backend(self, lane: int) -> None:
        if not self.enabled or lane not in self.active_backends:
            return
        self._master_update_monitoring_information(lane, self.active_backends[lane])
        self._loop.call_later(self.rates[lane], self._check_backend, lane)

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

    def _dirac_execute_blocking(self, lane: int, method: str, *args: Any) -> Any:
        """``DiracUtilities.execute``: the same command, waited for on the calling (loop) thread."""
        try:
            answer = getattr(self.blocking[lane], method)(*args)
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
            # DiracBase.py:1504-1519: only a job Ganga does not have as running is requeued
            # now; a running one waits for the backend's next poll.
            if job.backend_status in DIRAC_FINAL and job.status not in ("running", "completing", "completed"):
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
            if job.status in ("completed", "killed", "removed"):
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
            # DiracBase.job_finalisation sleeps with time.sleep on the loop's thread (:1348).
            time.sleep(FINALISATION_SLEEP)  # noqa: ASYNC251 - modelled as Ganga does it
        job.been_queued = False

    async def _internal_job_finalisation(self, lane: int, job: GangaJob) -> None:
        name = self.lanes[lane].lane.name
        backend_id = int(job.backend_id)
        # _getStateTime: the running and completing times, one awaited call each (:1035).
        for _ in range(2):
            await self._dirac_execute(lane, "getJobStatus", [backend_id])
        if job.backend_status == "Done":
            if job.status != "completing":
                publish_change(self.bus, job, name, job.status, "completing")
            await self._dirac_execute(lane, "getOutputSandbox", backend_id)  # finished_job (:1150)
            publish_change(self.bus, job, name, "completing", "completed")
        else:
            # _getStateTime(job, 'failed') ends with a blocking execute for 'completed' (:1023).
            self._dirac_execute_blocking(lane, "getJobStatus", [backend_id])
            if job.status != "failed":
                publish_change(self.bus, job, name, job.status, "failed")
            await self._dirac_execute(lane, "getOutputSandbox", backend_id)  # failed_sandbox_download
        self.recorder.mark_collected(job.index, time.time())

    # -- Localhost (coroutine) and Batch (plain function) -------------------------------------

    def _status_path(self, lane: int, job: GangaJob) -> Path:
        submitted = self.lanes[lane]
        return job_dir(self.status_dir, submitted.lane.name, int(job.backend_id) - submitted.first_id) / STATUS_FILE

    async def _local_update(self, lane: int, jobs: list[GangaJob]) -> None:
        name = self.lanes[lane].lane.name
        for job in jobs:
            try:
                async with async_open(self._status_path(lane, job)) as statusfile:
                    text = await statusfile.read()
            except OSError:
                continue
            self.recorder.mark_confirmed((job.index,))
            self._apply_exit(job, name, text)

    def _batch_update(self, lane: int, jobs: list[GangaJob]) -> None:
        name = self.lanes[lane].lane.name
        for job in jobs:
            path = self._status_path(lane, job)
            try:
                with path.open() as statusfile:
                    text = statusfile.read()
            except OSError:
                continue
            self.recorder.mark_confirmed((job.index,))
            if not self._apply_exit(job, name, text):
                with contextlib.suppress(OSError):
                    os.path.getmtime(path.with_name("__heartbeat__"))

    def _apply_exit(self, job: GangaJob, name: str, text: str) -> bool:
        match = EXITCODE.search(text)
        if match is None or job.status != "running":
            return False
        publish_change(self.bus, job, name, "running", "completed" if int(match.group("exitcode")) == 0 else "failed")
        self.recorder.mark_collected(job.index, time.time())
        return True


async def _log_exceptions(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception as exc:  # noqa: BLE001 - Ganga logs and carries on
        log.debug("monitoring task failed: %s", exc)
