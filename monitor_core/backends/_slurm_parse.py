"""What Slurm's commands print, turned into reports and rejections. Pure functions, no I/O.

Every job state Slurm 22.05 names (``man squeue``, JOB STATE CODES) maps explicitly to
a Ganga status. A state not in the table, or a line that does not have the expected
shape, becomes a :class:`~monitor_core.backends.Rejection`; nothing is guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from .._model import JobStatus
from ._base import PollResult, Rejection, StatusReport

__all__ = [
    "SLURM_STATES",
    "SQUEUE_FORMAT",
    "QueueAnswer",
    "decode_wait_status",
    "exit_code_of",
    "parse_exit_code_pair",
    "parse_jobcomp",
    "parse_key_values",
    "parse_sacct",
    "parse_scontrol_job",
    "parse_squeue",
    "slurm_status",
]

_S = JobStatus

SLURM_STATES: Final[Mapping[str, JobStatus]] = {
    # Waiting for resources, or for the user or admin to let it go: not started yet.
    "PENDING": _S.SUBMITTED,
    "CONFIGURING": _S.SUBMITTED,  # allocated, nodes still booting: the user's code has not started
    "REQUEUED": _S.SUBMITTED,  # put back in the queue; it will be pending again
    "REQUEUE_FED": _S.SUBMITTED,
    "REQUEUE_HOLD": _S.SUBMITTED,  # requeued and held
    "RESV_DEL_HOLD": _S.SUBMITTED,  # held because its reservation was deleted
    # It has an allocation and its processes exist; the outcome is not known yet.
    "RUNNING": _S.RUNNING,
    "COMPLETING": _S.RUNNING,  # processes being cleaned up; exit status not final yet
    "SUSPENDED": _S.RUNNING,
    "STOPPED": _S.RUNNING,  # SIGSTOPped, allocation kept
    "RESIZING": _S.RUNNING,
    "SIGNALING": _S.RUNNING,  # a signal is being delivered
    "STAGE_OUT": _S.RUNNING,  # burst buffer stage-out after the script ended
    # Ended.
    "COMPLETED": _S.COMPLETED,
    "FAILED": _S.FAILED,
    "TIMEOUT": _S.FAILED,
    "NODE_FAIL": _S.FAILED,
    "PREEMPTED": _S.FAILED,  # ended by preemption (a requeued one shows REQUEUED/PENDING instead)
    "OUT_OF_MEMORY": _S.FAILED,
    "BOOT_FAIL": _S.FAILED,
    "DEADLINE": _S.FAILED,
    "SPECIAL_EXIT": _S.FAILED,  # held after a special exit value; needs a user's decision
    "CANCELLED": _S.KILLED,
    # A federation sibling's record, revoked because another cluster runs the job: this
    # cluster will never learn the outcome, and saying so beats inventing one.
    "REVOKED": _S.UNKNOWN,
}
"""Slurm job state name -> Ganga status."""

SQUEUE_FORMAT: Final = "JobID:|,State:|,Reason:|,exit_code:|"
"""``squeue -O`` fields, each ended by ``|``: a line missing its last ``|`` was cut short."""
_SQUEUE_FIELDS: Final = 4

_KEY: Final = re.compile(r"(?:(?<=\s)|^)([A-Za-z][\w:/]*)=")
_JOB_ID: Final = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class QueueAnswer:
    """An ``squeue`` answer: reports, refusals, and the asked-for ids it did not mention."""

    result: PollResult = field(default_factory=PollResult)
    missing: tuple[str, ...] = ()


def slurm_status(state: str) -> JobStatus | None:
    """The Ganga status of a Slurm state name (``sacct``'s ``CANCELLED by 0`` included), or ``None``."""
    name = state.strip().split(" ", 1)[0]
    return SLURM_STATES.get(name)


def decode_wait_status(raw: int) -> tuple[int, int]:
    """Split a raw wait status (``squeue -O exit_code``) into (exit status, signal)."""
    return (raw >> 8) & 0xFF, raw & 0x7F


def exit_code_of(status: int, signal: int) -> int:
    """One number for a job's end: its exit status, or minus the signal that ended it."""
    return -signal if signal else status


def parse_exit_code_pair(text: str) -> tuple[int, int] | None:
    """Parse Slurm's ``ExitCode=<status>:<signal>``, or return ``None`` when it is not that."""
    status, sep, signal = text.strip().partition(":")
    if not sep or not status.isdigit() or not signal.isdigit():
        return None
    return int(status), int(signal)


def _info(state: str, reason: str) -> str:
    return state if reason in ("", "None", "(null)") else f"{state} ({reason})"


def parse_squeue(requested: Sequence[str], text: str) -> QueueAnswer:
    """Read ``squeue -h -t all -j IDS -O SQUEUE_FORMAT`` output.

    Ids that were asked for but not mentioned have left Slurm's queue (squeue leaves out
    unknown ids silently); they are returned as ``missing`` for a closer look.
    """
    wanted = set(requested)
    seen: set[str] = set()
    result = PollResult()
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|")
        job_id = parts[0].strip()
        if not _JOB_ID.fullmatch(job_id):
            result.rejections.append(Rejection(None, "garbage", f"squeue line without a job id: {line!r:.120}"))
            continue
        if len(parts) != _SQUEUE_FIELDS + 1 or parts[-1] != "":
            seen.add(job_id)
            result.rejections.append(Rejection(job_id, "garbage", f"truncated or malformed squeue line: {line!r:.120}"))
            continue
        state, reason, raw_exit = (p.strip() for p in parts[1:_SQUEUE_FIELDS])
        if job_id not in wanted:
            result.rejections.append(Rejection(job_id, "garbage", "squeue names a job that was not asked for"))
            continue
        if job_id in seen:
            result.rejections.append(Rejection(job_id, "garbage", "squeue names this job twice"))
            continue
        seen.add(job_id)
        status = slurm_status(state)
        if status is None:
            result.rejections.append(Rejection(job_id, "unknown_state", f"unknown Slurm state {state!r:.40}"))
            continue
        if not raw_exit.isdigit():
            result.rejections.append(Rejection(job_id, "garbage", f"exit code is not a number: {raw_exit!r:.40}"))
            continue
        code = exit_code_of(*decode_wait_status(int(raw_exit))) if status.is_final else None
        result.reports.append(StatusReport(job_id, status, _info(state, reason), code))
    missing = tuple(job_id for job_id in requested if job_id not in seen)
    return QueueAnswer(result, missing)


def parse_key_values(line: str) -> dict[str, str]:
    """Split a ``Key=value Key=value`` line; values may hold spaces (``JobName=a b``)."""
    matches = list(_KEY.finditer(line))
    fields: dict[str, str] = {}
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(line)
        fields.setdefault(match.group(1), line[match.end() : end].strip())
    return fields


def _report_from_fields(
    backend_id: str, fields: Mapping[str, str], source: str, state_key: str = "JobState"
) -> StatusReport | Rejection:
    state = fields.get(state_key)
    if state is None or fields.get("JobId") != backend_id:
        return Rejection(backend_id, "garbage", f"{source}: no JobId/{state_key} for this job")
    status = slurm_status(state)
    if status is None:
        return Rejection(backend_id, "unknown_state", f"{source}: unknown Slurm state {state!r:.40}")
    code = None
    if status.is_final:
        pair = parse_exit_code_pair(fields.get("ExitCode", ""))
        if pair is None:
            return Rejection(backend_id, "garbage", f"{source}: bad ExitCode {fields.get('ExitCode')!r:.40}")
        code = exit_code_of(*pair)
    return StatusReport(backend_id, status, _info(state, fields.get("Reason", "")), code)


def parse_scontrol_job(backend_id: str, text: str) -> StatusReport | Rejection:
    """Read ``scontrol show job -o ID`` (one line of ``Key=value`` fields)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        return Rejection(backend_id, "garbage", f"scontrol: expected one line, got {len(lines)}")
    return _report_from_fields(backend_id, parse_key_values(lines[0]), "scontrol")


def parse_sacct(requested: Sequence[str], text: str) -> PollResult:
    """Read ``sacct -X -n -P -j IDS -o JobID,State,ExitCode``; ids it does not name are left out."""
    wanted = set(requested)
    result = PollResult()
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != 3 or not _JOB_ID.fullmatch(parts[0]):
            result.rejections.append(Rejection(None, "garbage", f"malformed sacct line: {line!r:.120}"))
            continue
        job_id, state, exit_code = parts
        if job_id not in wanted:
            continue  # an older job that reused the id on another cluster: not ours
        report = _report_from_fields(job_id, {"JobId": job_id, "JobState": state, "ExitCode": exit_code}, "sacct")
        if isinstance(report, Rejection):
            result.rejections.append(report)
        else:
            result.reports.append(report)
    return result


def parse_jobcomp(requested: Sequence[str], text: str) -> PollResult:
    """Read the ``jobcomp/filetxt`` log: the last record of each asked-for job wins (requeues write more)."""
    wanted = set(requested)
    last: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        if not line.startswith("JobId="):
            continue
        fields = parse_key_values(line)
        job_id = fields.get("JobId", "")
        if job_id in wanted:
            last[job_id] = fields
    result = PollResult()
    for job_id, fields in last.items():
        report = _report_from_fields(job_id, fields, "job completion log")
        if isinstance(report, Rejection):
            result.rejections.append(report)
        else:
            result.reports.append(report)
    return result
