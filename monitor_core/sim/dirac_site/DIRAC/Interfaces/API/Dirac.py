"""DIRAC's client API (``Dirac()``), on the simulated service.

Each method answers in DIRAC's ``S_OK``/``S_ERROR`` shape. Job ids are ints, as DIRAC's are;
a bulk status answer is keyed by int id. There is no file catalogue on the simulated grid:
data-management calls answer that no file is known.
"""

from __future__ import annotations

import base64
import io
import os
import tarfile
from pathlib import Path
from typing import Any

from ... import S_ERROR, S_OK
from ..._service import call
from .Job import Job

__all__ = ["Dirac"]

_NO_CATALOGUE = "the simulated DIRAC grid has no file catalogue"


_STATUS_PIECE = 500
"""Ids per status request: the simulated service's default bulk limit."""


def _ids(job_ids: Any) -> list[int]:
    if isinstance(job_ids, int | str):
        return [int(job_ids)]
    return [int(job_id) for job_id in job_ids]


def _pack(paths: list[str]) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in paths:
            archive.add(path, arcname=os.path.basename(path))
    return base64.b64encode(buffer.getvalue()).decode()


def _no_files(lfns: Any) -> dict[str, Any]:
    names = [lfns] if isinstance(lfns, str) else list(lfns or [])
    return S_OK({"Successful": {}, "Failed": {str(lfn): _NO_CATALOGUE for lfn in names}})


class Dirac:
    """The DIRAC API object Ganga's commands call as ``dirac``."""

    def __init__(self, withRepo: bool = False, repoLocation: str = "") -> None:
        self.with_repo = withRepo

    # -- jobs --------------------------------------------------------------------------------

    def submitJob(self, job: Job, mode: str = "wms") -> dict[str, Any]:
        """Submit a job; its DIRAC id (an int)."""
        local = [path for path in job.input_sandbox if not path.upper().startswith("LFN:")]
        missing = [path for path in local if not os.path.isfile(path)]
        if missing:
            return S_ERROR(f"Input sandbox files not found: {', '.join(missing)}")
        description = job.description()
        try:
            description["input_sandbox"] = _pack(local)
        except (OSError, tarfile.TarError) as exc:
            return S_ERROR(f"Could not pack the input sandbox: {exc}")
        answer = call("submitJob", description)
        if answer["OK"]:
            answer["Value"] = int(answer["Value"])
            answer["JobID"] = answer["Value"]
        return answer

    def getJobStatus(self, jobIDs: Any) -> dict[str, Any]:
        """Status, minor status and site of each job, keyed by its int id.

        DIRAC's client takes any number of ids (Ganga asks for ``numParallelJobs``, 1000, at a
        time); the service answers at most its bulk limit per request, so a longer list is
        asked for in pieces, one after another, as one call.
        """
        ids = _ids(jobIDs)
        statuses: dict[int, Any] = {}
        for start in range(0, max(len(ids), 1), _STATUS_PIECE):
            answer = call("getJobStatus", ids[start : start + _STATUS_PIECE])
            if not answer["OK"]:
                return answer
            value = answer["Value"]
            if not isinstance(value, dict):
                return S_ERROR("malformed status answer")
            try:
                statuses.update((int(job_id), record) for job_id, record in value.items())
            except ValueError:
                return S_ERROR("malformed status answer")
        return S_OK(statuses)

    def getJobLoggingInfo(self, jobID: Any) -> dict[str, Any]:
        """The job's logging records: (status, minor status, application status, UTC time, source)."""
        answer = call("getJobLoggingInfo", int(jobID))
        if answer["OK"]:
            answer["Value"] = [tuple(record) for record in answer["Value"]]
        return answer

    def getJobParameters(self, jobID: Any, **_kwargs: Any) -> dict[str, Any]:
        """The job's parameters (``NormCPUTime(s)``, ``HostName``, ...)."""
        return call("getJobParameters", int(jobID))

    def getJobAttributes(self, jobID: Any) -> dict[str, Any]:
        """The job's attributes."""
        return call("getJobAttributes", int(jobID))

    def getJobCPUTime(self, jobID: Any) -> dict[str, Any]:
        """CPU seconds the job used so far."""
        answer = call("getJobCPUTime", int(jobID))
        if answer["OK"]:
            answer["Value"] = {int(jobID): {"CPU": answer["Value"]}}
        return answer

    def peekJob(self, jobID: Any) -> dict[str, Any]:
        """The tail of a running job's output."""
        return call("peekJob", int(jobID))

    def getOutputSandbox(
        self,
        jobID: Any,
        outputDir: str | None = None,
        oversized: bool = True,
        noJobDir: bool = False,
        unpack: bool = True,
    ) -> dict[str, Any]:
        """Download the job's output sandbox into ``outputDir`` (in a directory named by the id unless ``noJobDir``)."""
        job_id = int(jobID)
        answer = call("downloadSandbox", job_id)
        if not answer["OK"]:
            return answer
        directory = Path(outputDir or os.getcwd())
        if not noJobDir:
            directory = directory / str(job_id)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            data = base64.b64decode(answer["Value"])
            if not unpack:
                target = directory / f"{job_id}_output_sandbox.tar.gz"
                target.write_bytes(data)
                return S_OK([target.name])
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
                names = [member.name for member in archive.getmembers() if member.isfile()]
                archive.extractall(directory, filter="data")
        except (OSError, ValueError, tarfile.TarError) as exc:
            return S_ERROR(f"Could not unpack the output sandbox of job {job_id}: {exc}")
        return S_OK(names)

    def killJob(self, jobID: Any) -> dict[str, Any]:
        """Kill jobs; the ids killed."""
        return call("killJob", _ids(jobID))

    def deleteJob(self, jobID: Any) -> dict[str, Any]:
        """Delete jobs (they end as Deleted); the ids deleted."""
        return call("deleteJob", _ids(jobID))

    def reschedule(self, jobID: Any) -> dict[str, Any]:
        """Run finished jobs again; the ids rescheduled."""
        return call("reschedule", _ids(jobID))

    def selectJobs(self, **_conditions: Any) -> dict[str, Any]:
        """Job selection by attributes: not kept by the simulated service."""
        return S_OK([])

    def ping(self, system: str, service: str) -> dict[str, Any]:
        """Whether the service answers."""
        return call("ping")

    # -- data: no file catalogue on the simulated grid -------------------------------------------

    def getJobOutputData(self, jobID: Any, outputFiles: Any = "", destinationDir: str = "") -> dict[str, Any]:
        return S_ERROR(_NO_CATALOGUE)

    def getJobOutputLFNs(self, jobID: Any) -> dict[str, Any]:
        return S_OK([])

    def getLfnMetadata(self, lfns: Any) -> dict[str, Any]:
        return _no_files(lfns)

    def getReplicas(self, lfns: Any, *_args: Any, **_kwargs: Any) -> dict[str, Any]:
        return _no_files(lfns)

    def getReplicasForJobs(self, lfns: Any, *_args: Any, **_kwargs: Any) -> dict[str, Any]:
        return _no_files(lfns)

    def getAccessURL(self, lfn: Any, *_args: Any, **_kwargs: Any) -> dict[str, Any]:
        return _no_files(lfn)

    def removeFile(self, lfns: Any) -> dict[str, Any]:
        return _no_files(lfns)

    def removeReplica(self, lfns: Any, *_args: Any) -> dict[str, Any]:
        return _no_files(lfns)

    def getFile(self, lfns: Any, destDir: str = "") -> dict[str, Any]:
        return S_ERROR(_NO_CATALOGUE)

    def addFile(self, lfn: str, *_args: Any) -> dict[str, Any]:
        return S_ERROR(_NO_CATALOGUE)

    def replicateFile(self, lfn: str, *_args: Any) -> dict[str, Any]:
        return S_ERROR(_NO_CATALOGUE)

    def checkSEAccess(self, se: str, access: str = "Write") -> dict[str, Any]:
        return S_OK(False)

    def splitInputData(self, lfns: Any, maxFilesPerJob: int = 20, **_kwargs: Any) -> dict[str, Any]:
        files = list(lfns or [])
        size = max(1, int(maxFilesPerJob))
        return S_OK([files[i : i + size] for i in range(0, len(files), size)])

    def getInputDataCatalog(self, *_args: Any) -> dict[str, Any]:
        return S_ERROR(_NO_CATALOGUE)
