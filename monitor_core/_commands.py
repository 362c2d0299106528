"""Commands a viewer sends to a monitoring session, and how a session carries them out."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

from ._events import CommandAcked
from ._scheduler import NotCollectable, Scheduler, UnknownBackend, UnknownJob

__all__ = [
    "CollectOutput",
    "Command",
    "PauseBackend",
    "RefreshJob",
    "ResumeBackend",
    "SelectEvents",
    "SetInterval",
    "TailOutput",
    "execute_command",
]

_TAIL_BYTES = 4096


def _new_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshJob:
    """Poll one job now, ahead of the queue."""

    job_id: str
    command_id: str = field(default_factory=_new_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class PauseBackend:
    """Make no more calls to a backend until it is resumed."""

    backend: str
    command_id: str = field(default_factory=_new_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumeBackend:
    """Call a paused backend again."""

    backend: str
    command_id: str = field(default_factory=_new_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class SetInterval:
    """Change a backend's target poll interval."""

    backend: str
    seconds: float
    command_id: str = field(default_factory=_new_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class TailOutput:
    """Ask for the end of a finished job's collected stdout and stderr (in the ack's message)."""

    job_id: str
    command_id: str = field(default_factory=_new_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class CollectOutput:
    """Collect a finished job's outputs now, ahead of queued fetches (also retries a failed collection)."""

    job_id: str
    command_id: str = field(default_factory=_new_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class SelectEvents:
    """Send this viewer only events of these kinds (type names, as on the wire), from now on.

    The transport carries it out, not the session: a viewer that follows a few kinds (a
    script watching heartbeats and lag) then costs the session nothing for the rest. The
    first snapshot is sent still, and so are the snapshots a resync sends.
    """

    kinds: tuple[str, ...]
    command_id: str = field(default_factory=_new_id)


Command: TypeAlias = RefreshJob | PauseBackend | ResumeBackend | SetInterval | TailOutput | CollectOutput | SelectEvents


def _tail(path: Path) -> str:
    with path.open("rb") as stream:
        stream.seek(0, 2)
        size = stream.tell()
        stream.seek(max(0, size - _TAIL_BYTES))
        return stream.read().decode(errors="replace")


def _tail_output(scheduler: Scheduler, job_id: str) -> str:
    if job_id not in scheduler.jobs:
        raise UnknownJob(job_id)
    directory = scheduler.outputs.path(job_id)
    if not directory.is_dir():
        raise ValueError(f"job {job_id} has no collected output yet")
    parts = []
    for path in sorted(directory.iterdir()):
        if path.is_file():
            parts.append(f"==> {path.name} <==\n{_tail(path)}")
    return "\n".join(parts) or "(no output files)"


def execute_command(scheduler: Scheduler, command: Command) -> CommandAcked:
    """Carry out a command; never raises, the ack says what happened."""
    try:
        if isinstance(command, RefreshJob):
            scheduler.refresh_now(command.job_id)
            message = f"job {command.job_id} will be polled next"
        elif isinstance(command, PauseBackend):
            scheduler.pause(command.backend)
            message = f"{command.backend} paused"
        elif isinstance(command, ResumeBackend):
            scheduler.resume(command.backend)
            message = f"{command.backend} resumed"
        elif isinstance(command, SetInterval):
            scheduler.set_interval(command.backend, command.seconds)
            message = f"{command.backend} poll interval set to {command.seconds:g}s"
        elif isinstance(command, TailOutput):
            message = _tail_output(scheduler, command.job_id)
        elif isinstance(command, CollectOutput):
            scheduler.collect_now(command.job_id)
            message = f"job {command.job_id}'s outputs will be collected next"
        elif isinstance(command, SelectEvents):
            # What a viewer receives is its transport's business; one that reaches here has none.
            return CommandAcked(
                at=time.time(), command_id=command.command_id, ok=False, message="this transport sends every event"
            )
        else:
            return CommandAcked(at=time.time(), command_id="", ok=False, message=f"unknown command {command!r:.60}")
    except UnknownJob as exc:
        return CommandAcked(at=time.time(), command_id=command.command_id, ok=False, message=f"no job {exc.args[0]}")
    except UnknownBackend as exc:
        return CommandAcked(
            at=time.time(), command_id=command.command_id, ok=False, message=f"no backend {exc.args[0]}"
        )
    except (NotCollectable, ValueError, OSError) as exc:
        return CommandAcked(at=time.time(), command_id=command.command_id, ok=False, message=str(exc))
    return CommandAcked(at=time.time(), command_id=command.command_id, ok=True, message=message)
