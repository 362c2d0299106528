"""Ganga's Dirac jobs in drive mode: one bulk status call per batch, finalisation as a fetch.

Ganga 8.7's own loop asks DIRAC about a backend's jobs in chunks awaited one after another,
through a DIRAC executor process whose answers it polls every 0.3 s, and finalises a job
that reached Done on a later poll. Here a lane's poll asks DIRAC about the whole batch in one
``getJobStatus`` call made by DIRAC's own client in a subprocess worker (killed and replaced
when a call outlives the lane's timeout), then, on a worker thread, records DIRAC's word on
each job that moved as Ganga's ``monitor_dirac_running_jobs`` does. A job DIRAC says is
final is reported so, which makes the lane queue its output fetch: the fetch runs Ganga's own
finalisation (``DiracBase._internal_job_finalisation``: state times, output sandbox download,
``completing`` -> ``completed``, or ``failed``) on a worker thread, never on Ganga's main
thread, and is retried with backoff until Ganga holds the outcome DIRAC reported. The DIRAC
commands that finalisation asks for are answered by the lane's own DIRAC client process
(:mod:`._dirac_commands`), which starts reading a job's records the moment the poll's answer
names it final.

Subjobs are tracked from their own ``submitted`` change, so a split job's first subjobs are
polled, and finished, while its master is still submitting the rest (Ganga issue #2121).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .._model import JobStatus
from ..backends._base import BackendError, Capabilities, FetchResult, PollResult, Rejection, StatusReport
from ..backends._runners import MAX_FRAME, CallRunner, ProcessRunner, _Worker
from ._backend import GangaBackend, answer_of
from ._calls import CallOutcome, _confirm, _describe, _settle, _thread_loop
from ._changes import CallContext, StatusChange
from ._dirac_commands import DiracCommandClient, route_finalisation_commands
from ._hooks import current_call, job_change
from ._registry import raw_job

__all__ = ["GANGA_DIRAC", "DiracClientRunner", "DiracSettings", "GangaDiracBackend", "dirac_settings"]

log = logging.getLogger(__name__)

GANGA_DIRAC: Final = "Dirac"
"""Ganga's name of its Dirac backend class."""
_MONITORED: Final = ("submitted", "running")
_LEFT_ALONE: Final = ("removed", "killed")
_UPLOADING: Final = "Uploading Output Data"


@dataclass(frozen=True, slots=True)
class DiracSettings:
    """What the Dirac lane needs from Ganga's ``[DIRAC]`` configuration (read once)."""

    env_json: str
    """``[DIRAC]DiracEnvJSON``: the environment DIRAC's client runs in."""
    status_mapping: Mapping[str, str]
    """``[DIRAC]statusmapping``: DIRAC major status -> Ganga status."""
    finalised_statuses: Mapping[str, str]
    """``[DIRAC]finalised_statuses``: DIRAC statuses that end a job, and Ganga's outcome."""


def dirac_settings() -> DiracSettings | None:
    """Ganga's DIRAC settings, or ``None`` when Ganga's Dirac plugin is not loaded."""
    try:
        from GangaCore.Utility.Config import getConfig

        config = getConfig("DIRAC")
        return DiracSettings(
            env_json=str(config["DiracEnvJSON"] or ""),
            status_mapping=dict(config["statusmapping"]),
            finalised_statuses=dict(config["finalised_statuses"]),
        )
    except Exception:  # noqa: BLE001 - Ganga's config raises its own error types when the plugin is absent
        return None


@dataclass(frozen=True, slots=True)
class _View:
    """A Dirac job as its lane sees it before asking DIRAC: plain values only."""

    status: str
    dirac_id: int | None
    dirac_status: str | None
    minor_status: str | None
    is_master: bool
    present: StatusChange


def _views(job_ids: Sequence[str]) -> dict[str, _View]:
    """Ganga's status and DIRAC id of each job still in the registry (worker thread)."""
    views: dict[str, _View] = {}
    for job_id in job_ids:
        try:
            job = raw_job(job_id)
        except KeyError:
            continue
        backend = job.backend
        dirac_id = getattr(backend, "id", None)
        views[job_id] = _View(
            status=str(job.status),
            dirac_id=dirac_id if isinstance(dirac_id, int) else None,
            dirac_status=getattr(backend, "status", None),
            minor_status=getattr(backend, "statusInfo", None),
            is_master=bool(len(job.subjobs)),
            present=job_change(job, None, "poll"),
        )
    return views


_Said = tuple[str | None, str | None, str | None]
"""DIRAC's (major status, minor status, site) of a job."""


def _record_dirac_status(
    job_ids: Sequence[str],
    context: CallContext,
    said: Mapping[str, _Said],
    settings: DiracSettings,
    finals: dict[str, str],
) -> CallOutcome:
    """Record DIRAC's word on jobs that moved, as Ganga's own monitoring does (worker thread).

    Jobs DIRAC says are final are brought to ``running`` (Ganga finalises only running jobs)
    and named in ``finals`` with Ganga's outcome; their finalisation is the lane's fetch.
    """
    token = current_call.set(context)
    try:
        outcome = CallOutcome()
        jobs: list[Any] = []
        masters: dict[int, Any] = {}
        for job_id in job_ids:
            try:
                job = raw_job(job_id)
            except KeyError:
                outcome.missing.append(job_id)
                continue
            jobs.append(job)
            try:
                if len(job.subjobs):
                    masters[id(job)] = job
                    continue
                _record_one(job, said.get(job_id), settings, finals, job_id)
                if job.master is not None:
                    masters[id(job.master)] = job.master
            except Exception as exc:  # noqa: BLE001 - a Ganga object may raise anything; it is reported, not fatal
                outcome.errors[job_id] = _describe(exc)
        _settle([master for master in masters.values() if not _submitting(master)], outcome)
        _confirm(jobs, outcome)
        return outcome
    finally:
        current_call.reset(token)


def _record_one(job: Any, said: _Said | None, settings: DiracSettings, finals: dict[str, str], job_id: str) -> None:
    status = str(job.status)
    if status not in _MONITORED:
        return
    if job.master is not None and str(job.master.status) in _LEFT_ALONE:
        return  # the user changed it under us
    backend = job.backend
    if backend.id is None:
        # Lost during a crashed submission (Ganga's own verdict on such a job).
        job.updateStatus("failed", update_master=False)
        return
    major, minor, site = said if said is not None else ("Unknown: No status for Job", None, None)
    backend.statusInfo = minor
    backend.status = major
    backend.actualCE = site
    if major is not None and major in settings.finalised_statuses:
        if status != "running":
            job.updateStatus("running", update_master=False)
        outcome = settings.finalised_statuses[major]
        if outcome != "completed" and _submitting(job.master):
            # Ganga takes a failed subjob for a failed submission while its master still
            # submits; it is finalised on a poll after the submission.
            return
        finals[job_id] = outcome
        return
    ganga = settings.status_mapping.get(major or "", "failed")
    if minor == _UPLOADING:
        ganga = "running"
    if ganga != status:
        job.updateStatus(ganga, update_master=False)


def _submitting(master: Any) -> bool:
    """Whether a split job is still submitting its subjobs (``None``: not a subjob).

    Ganga moves the master out of ``submitting`` between two blocks of subjobs, so its
    subjobs tell: some are still ``new`` or ``submitting``.
    """
    if master is None:
        return False
    if str(master.status) == "submitting":
        return True
    return any(str(subjob.status) in ("new", "submitting") for subjob in master.subjobs)


_in_finalisation = threading.local()
_guarded = False


def _guard_master_updates() -> None:
    """Leave a split job alone while it submits, when one of its subjobs is finalised early.

    Ganga's finalisation settles the master from its subjobs; in the middle of the master's
    submission that would move it out of ``submitting`` (its later subjobs are still ``new``)
    and break the submission. The master is settled by the lane's poll once it is submitted.
    """
    global _guarded
    from GangaCore.GPIDev.Lib.Job.Job import Job

    with _manager_lock:
        if _guarded:
            return
        original = Job.updateMasterJobStatus

        def update_master_job_status(self: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(_in_finalisation, "active", False) and _submitting(self):
                return None
            return original(self, *args, **kwargs)

        Job.updateMasterJobStatus = update_master_job_status
        _guarded = True


_manager_lock = threading.Lock()
_PACKAGE_ROOT: Final = str(Path(__file__).resolve().parents[2])
"""Where ``monitor_core`` is imported from."""


def _start_dirac_executor(job: Any) -> None:
    """Start Ganga's DIRAC executor process once, before threads race to start one each."""
    from GangaDirac.Lib.Server.DiracProcessManager import AsyncDiracManager

    with _manager_lock:
        manager = AsyncDiracManager()
        environment = manager.prepare_process_env(None, job.backend.credential_requirements)
        if not manager.is_dirac_process_active(manager.hash_dirac_env(environment)):
            manager.start_dirac_process(environment)


def _finalise(job_id: str, expected: str, finalised: set[str], commands: DiracCommandClient | None) -> tuple[str, ...]:
    """Ganga's own finalisation of a job DIRAC reported final (worker thread); the files it put in place.

    ``finalised`` holds the jobs whose finalisation went through; a job Ganga already holds as
    ``failed`` may have failed its output download, so like Ganga's own retry it goes again.
    ``commands``: the DIRAC client process that answers the finalisation's DIRAC commands
    (``None``: Ganga's DIRAC executor does).

    Raises:
        BackendError: Ganga's finalisation did not bring the job to ``expected``.
    """
    from GangaDirac.Lib.Backends.DiracBase import DiracBase

    token = current_call.set(CallContext(source="fetch"))
    try:
        try:
            job = raw_job(job_id)
        except KeyError:
            raise BackendError(f"job {job_id} is no longer in Ganga's registry") from None
        status = str(job.status)
        if status in ("completed", *_LEFT_ALONE) or (status == expected and job_id in finalised):
            return _listing(job)  # done already: its output is not fetched twice
        if status != "running":
            # As Ganga's job_finalisation does before each attempt.
            job.updateStatus("submitted")
            job.updateStatus("running")
        _start_dirac_executor(job)
        _guard_master_updates()
        job.been_queued = True
        _in_finalisation.active = True
        dirac_id = job.backend.id
        if commands is not None and isinstance(dirac_id, int):
            commands.prefetch([(dirac_id, expected == "completed")])  # if the poll has not already
        try:
            with route_finalisation_commands(commands) if commands is not None else contextlib.nullcontext():
                _thread_loop().run_until_complete(DiracBase._internal_job_finalisation(job, expected))
        except Exception as exc:
            raise BackendError(f"Ganga's finalisation of job {job_id} raised {type(exc).__name__}: {exc}") from exc
        finally:
            job.been_queued = False
            _in_finalisation.active = False
            if commands is not None and isinstance(dirac_id, int):
                commands.release([dirac_id])
        if str(job.status) != expected:
            raise BackendError(f"Ganga's finalisation left job {job_id} {job.status}, not {expected}")
        finalised.add(job_id)
        return _listing(job)
    finally:
        current_call.reset(token)


def _listing(job: Any) -> tuple[str, ...]:
    directory = job.outputdir
    try:
        return tuple(sorted(os.listdir(directory))) if directory else ()
    except OSError:
        return ()


class DiracClientRunner(ProcessRunner):
    """Subprocess workers running DIRAC's client, started where this package is importable.

    Loading Ganga's Dirac plugin replaces the session's own environment with DIRAC's (its
    proxy shell shares ``os.environ``), ``PYTHONPATH`` included, so each worker is started
    with this package's location put first; the worker then enters the DIRAC environment itself.

    Args:
        env_json: ``[DIRAC]DiracEnvJSON``.
        proxy: the proxy file DIRAC's client presents.
        size: workers, i.e. status calls in flight at once.
        name: the lane's name.
    """

    def __init__(self, env_json: str, proxy: str, *, size: int, name: str) -> None:
        super().__init__(
            "monitor_core.ganga._dirac_worker:DiracStatusClient",
            {"env_json": env_json, "proxy": proxy},
            size=size,
            name=name,
        )

    async def _spawn(self) -> _Worker:
        python_path = os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "monitor_core.backends._worker_main",
            self._factory,
            json.dumps(self._options),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=MAX_FRAME,
            env={**os.environ, "PYTHONPATH": python_path},
        )
        worker = _Worker(process)
        self._workers.add(worker)
        return worker


class GangaDiracBackend(GangaBackend):
    """Ganga's ``Dirac`` backend: bulk status through DIRAC's client in a subprocess, Ganga's finalisation as the fetch.

    Args:
        runner: the subprocess worker(s) running :class:`~monitor_core.ganga._dirac_worker.DiracStatusClient`.
        settings: Ganga's ``[DIRAC]`` settings.
        name, capabilities, executor, late_changes, max_resubmit_fraction: as for :class:`GangaBackend`.
    """

    def __init__(
        self,
        name: str,
        capabilities: Capabilities,
        *,
        executor: concurrent.futures.ThreadPoolExecutor,
        late_changes: Callable[[list[StatusChange]], None],
        max_resubmit_fraction: float | None,
        runner: CallRunner,
        settings: DiracSettings,
        commands: DiracCommandClient | None = None,
    ) -> None:
        super().__init__(
            name,
            capabilities,
            executor=executor,
            late_changes=late_changes,
            max_resubmit_fraction=max_resubmit_fraction,
        )
        self._runner = runner
        self._commands = commands
        self.settings = settings
        self._outcomes: dict[str, str] = {}
        """Ganga's outcome of each job DIRAC reported final, until it is finalised."""
        self._finalised_jobs: set[str] = set()
        """Jobs whose finalisation went through (their outputs are in Ganga's workspace)."""
        self._dirac_ids: dict[str, int] = {}
        """Each polled job's DIRAC id, as read from Ganga on an earlier poll."""
        self._finalising_lock = threading.Lock()
        self._finalising: dict[str, concurrent.futures.Future[tuple[str, ...]]] = {}
        """Each job's finalisation still running on a worker thread, even if the lane gave up on it."""

    async def start(self) -> None:
        starting = None if self._commands is None else asyncio.ensure_future(asyncio.to_thread(self._commands.start))
        await self._runner.start()
        if starting is not None:
            try:
                await starting
            except (OSError, ValueError) as exc:
                # Started again on the first finalisation; Ganga's executor takes over if it never runs.
                log.warning("%s: the DIRAC command process did not start: %s", self.name, exc)

    async def close(self) -> None:
        await self._runner.close()
        if self._commands is not None:
            await asyncio.to_thread(self._commands.close)
        await super().close()

    async def poll(self, backend_ids: Sequence[str]) -> PollResult:
        known = {job_id: self._dirac_ids[job_id] for job_id in backend_ids if job_id in self._dirac_ids}
        if len(known) == len(backend_ids):
            # DIRAC ids known from an earlier poll: ask DIRAC while Ganga's registry is read.
            asked = {dirac_id: job_id for job_id, dirac_id in known.items()}
            answer, views = await asyncio.gather(self._ask(asked), self.in_threads(_views, backend_ids))
        else:
            views = await self.in_threads(_views, backend_ids)
            asked = {
                view.dirac_id: job_id
                for job_id, view in views.items()
                if view.dirac_id is not None and not view.is_master and view.status in _MONITORED
            }
            answer = await self._ask(asked)
        said, refused = _parse(answer, asked)
        self._prefetch(said, views)
        stale: set[str] = set()
        for job_id, seen in views.items():
            if seen.dirac_id is not None and not seen.is_master and seen.status in _MONITORED:
                if known.get(job_id, seen.dirac_id) != seen.dirac_id:
                    stale.add(job_id)  # resubmitted meanwhile: DIRAC was asked about its old id
                self._dirac_ids[job_id] = seen.dirac_id
            else:
                self._dirac_ids.pop(job_id, None)
        moved: list[str] = []
        confirmed: list[StatusChange] = []
        garbled = {rejection.backend_id for rejection in refused}
        for job_id in backend_ids:
            view = views.get(job_id)
            if job_id in garbled or job_id in stale:
                continue  # refused above, or asked about an old id: asked again next time
            if view is None or view.is_master or (view.status in _MONITORED and _moved(view, said.get(job_id), self)):
                moved.append(job_id)
            else:
                confirmed.append(view.present)
        finals: dict[str, str] = {}
        changes: list[StatusChange] = []
        outcome = CallOutcome()
        if moved:
            changes, outcome = await self.in_ganga(
                moved, lambda ids, context: _record_dirac_status(ids, context, said, self.settings, finals)
            )
        result = answer_of(confirmed + changes, outcome)
        ended = []
        for job_id, ganga in finals.items():
            self._outcomes[job_id] = ganga
            status = JobStatus.COMPLETED if ganga == "completed" else JobStatus.FAILED
            ended.append(StatusReport(job_id, status, info=said.get(job_id, ("",))[0] or ""))
        return PollResult(reports=result.reports + ended, rejections=result.rejections + refused)

    def _prefetch(self, said: Mapping[str, _Said], views: Mapping[str, _View]) -> None:
        """Have the records of jobs DIRAC reports final read now, side by side, for their finalisations."""
        if self._commands is None:
            return
        finals = self.settings.finalised_statuses
        ended: list[tuple[int, bool]] = []
        for job_id, (major, _, _) in said.items():
            outcome = finals.get(major or "")
            view = views.get(job_id)
            if outcome is None or view is None or view.dirac_id is None:
                continue
            if not view.is_master and view.status in _MONITORED:
                ended.append((view.dirac_id, outcome == "completed"))
        if ended:
            self._commands.prefetch(ended)

    async def _ask(self, asked: Mapping[int, str]) -> Any:
        return await self._runner.call("status", list(asked)) if asked else []

    async def fetch_output(self, backend_id: str, destination: Path) -> FetchResult:
        self._dirac_ids.pop(backend_id, None)
        # A finalisation the lane gave up on (timed out) goes on inside Ganga: wait for it
        # rather than start a second one, so a job's output is downloaded once.
        while (earlier := self._finalisation_of(backend_id)) is not None:
            await asyncio.wait([asyncio.wrap_future(earlier)])
        settled = await self.in_threads(_settled_master, [backend_id])
        if settled is not None:
            return FetchResult(files=settled)  # a split job's outputs are its subjobs'
        expected = self._outcomes.get(backend_id)
        if expected is None:
            expected = await self.in_threads(lambda ids: _outcome_from_ganga(ids[0], self.settings), [backend_id])
        with self._finalising_lock:
            future = self._executor.submit(_finalise, backend_id, expected, self._finalised_jobs, self._commands)
            self._finalising[backend_id] = future
        future.add_done_callback(lambda done: self._finalised(backend_id, done))
        files = await asyncio.wrap_future(future)
        self._outcomes.pop(backend_id, None)
        return FetchResult(files=files)

    def _finalisation_of(self, job_id: str) -> concurrent.futures.Future[tuple[str, ...]] | None:
        with self._finalising_lock:
            return self._finalising.get(job_id)

    def _finalised(self, job_id: str, future: concurrent.futures.Future[tuple[str, ...]]) -> None:
        with self._finalising_lock:
            if self._finalising.get(job_id) is future:
                del self._finalising[job_id]


def _settled_master(job_ids: Sequence[str]) -> tuple[str, ...] | None:
    """Settle a split job from its subjobs (worker thread); ``None`` if it is not a split job.

    Raises:
        BackendError: its subjobs are still finishing.
    """
    try:
        job = raw_job(job_ids[0])
    except KeyError:
        raise BackendError(f"job {job_ids[0]} is no longer in Ganga's registry") from None
    if not len(job.subjobs):
        return None
    outcome = CallOutcome()
    if not _submitting(job):
        _settle([job], outcome)
    if str(job.status) not in ("completed", "failed", "killed"):
        raise BackendError(f"split job {job_ids[0]} is {job.status}: its subjobs are still finishing")
    return ()


def _outcome_from_ganga(job_id: str, settings: DiracSettings) -> str:
    """Ganga's outcome for a job from the DIRAC status its backend last recorded (worker thread)."""
    try:
        job = raw_job(job_id)
    except KeyError:
        raise BackendError(f"job {job_id} is no longer in Ganga's registry") from None
    return settings.finalised_statuses.get(str(job.backend.status), "completed")


def _moved(view: _View, said: _Said | None, backend: GangaDiracBackend) -> bool:
    """Whether DIRAC's word on a job is news for Ganga."""
    if said is None or view.dirac_id is None:
        return True
    major, minor, _ = said
    if major in backend.settings.finalised_statuses:
        return True
    ganga = backend.settings.status_mapping.get(major or "", "failed")
    if minor == _UPLOADING:
        ganga = "running"
    return ganga != view.status or major != view.dirac_status or minor != view.minor_status


def _parse(answer: Any, asked: Mapping[int, str]) -> tuple[dict[str, _Said], list[Rejection]]:
    said: dict[str, _Said] = {}
    refused: list[Rejection] = []
    if not isinstance(answer, list):
        raise BackendError(f"DIRAC's status answer is not a list: {answer!r:.200}")
    for entry in answer:
        if not isinstance(entry, list) or len(entry) != 4 or not isinstance(entry[0], int):
            refused.append(Rejection(None, "garbage", f"DIRAC status entry {entry!r:.100}"))
            continue
        job_id = asked.get(entry[0])
        if job_id is None:
            refused.append(Rejection(None, "unknown_job", f"DIRAC answered about job {entry[0]} it was not asked"))
            continue
        major, minor, site = entry[1], entry[2], entry[3]
        if not isinstance(major, str):
            refused.append(Rejection(job_id, "garbage", f"DIRAC status {major!r:.50}"))
            continue
        said[job_id] = (major, minor if isinstance(minor, str) else None, site if isinstance(site, str) else None)
    return said, refused
