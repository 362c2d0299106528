"""The ``slurm`` backend: a real Slurm cluster through its commands.

Each command runs as an asyncio subprocess with a timeout, so nothing here blocks the
loop. A poll is one ``squeue`` call for the whole batch; ids squeue no longer names have
left the queue, and their end is read from ``sacct`` where the cluster keeps accounting,
else from ``scontrol show job`` and, once the controller has purged the record, from the
``jobcomp/filetxt`` log. A command that exits non-zero (the controller is down, say) is a
:class:`BackendError`, so the lane retries, backs off and opens its breaker; what a
command prints that makes no sense is refused line by line (see :mod:`._slurm_parse`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .._model import JobSpec
from ._base import (
    Backend,
    BackendError,
    Capabilities,
    FetchResult,
    MalformedAnswer,
    OutputUnavailable,
    PollResult,
    Rejection,
    StatusReport,
)
from ._slurm_parse import (
    SQUEUE_FORMAT,
    parse_jobcomp,
    parse_key_values,
    parse_sacct,
    parse_scontrol_job,
    parse_squeue,
)

__all__ = ["DEFAULT_CAPABILITIES", "CommandResult", "SbatchOptions", "SlurmBackend", "SlurmCommands"]

log = logging.getLogger(__name__)

DEFAULT_CAPABILITIES: Final = Capabilities(
    max_batch=500,
    max_concurrency=2,
    fetch_concurrency=4,
    poll_interval=10.0,
    # Slurm clients retry an unreachable controller for MessageTimeout-1 s (9 s by default)
    # before failing; giving up sooner lets the breaker see the outage while it lasts.
    call_timeout=5.0,
)
_SUBMIT_PARALLEL: Final = 8
_LOOKUP_PARALLEL: Final = 4
_INVALID_ID: Final = "Invalid job id specified"
_NO_ACCOUNTING: Final = "accounting_storage/none"


@dataclass(frozen=True, slots=True)
class SlurmCommands:
    """Where Slurm's commands are and which cluster they talk to."""

    sbatch: str = "sbatch"
    squeue: str = "squeue"
    scontrol: str = "scontrol"
    scancel: str = "scancel"
    sacct: str = "sacct"
    slurm_conf: Path | None = None
    """The cluster's ``slurm.conf`` (``SLURM_CONF``); ``None`` keeps the environment's."""
    timeout: float = 30.0
    """Most seconds one command may take before it is killed."""


@dataclass(frozen=True, slots=True)
class CommandResult:
    """How a command ended and what it printed."""

    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True, slots=True)
class _ClusterFacts:
    accounting: bool
    jobcomp_file: Path | None


SbatchOptions = Callable[[JobSpec], Sequence[str]]


class SlurmBackend(Backend):
    """Jobs on a Slurm cluster.

    Args:
        workdir: the jobs' working directory, where their stdout and stderr files go
            (``slurm-<id>.out``/``.err``); the compute nodes must see it.
        commands: command paths, the cluster's ``SLURM_CONF``, the command timeout.
        name: the backend's name on the bus.
        capabilities: limits; ``call_timeout`` should be below the clients' own retry time.
        sbatch_args: extra ``sbatch`` options for every job (e.g. ``--partition=debug``).
        options_for: extra ``sbatch`` options for one job (e.g. its ``--time``).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        commands: SlurmCommands | None = None,
        name: str = "slurm",
        capabilities: Capabilities | None = None,
        sbatch_args: Sequence[str] = (),
        options_for: SbatchOptions | None = None,
    ) -> None:
        super().__init__(name, capabilities or DEFAULT_CAPABILITIES)
        self.workdir = Path(workdir).absolute()
        self.commands = commands or SlurmCommands()
        self.sbatch_args = tuple(sbatch_args)
        self.options_for = options_for
        self._outputs: dict[str, tuple[Path, Path]] = {}
        self._facts: _ClusterFacts | None = None
        self._env = dict(os.environ)
        if self.commands.slurm_conf is not None:
            self._env["SLURM_CONF"] = str(self.commands.slurm_conf)

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)

    # -- running commands -----------------------------------------------------------------

    async def run(self, *args: str, stdin: bytes | None = None) -> CommandResult:
        """Run one Slurm command to its end or its timeout, killing it if it is abandoned.

        Raises:
            BackendError: it could not be started or did not finish in time.
        """
        try:
            process = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env,
                start_new_session=True,
            )
        except OSError as exc:
            raise BackendError(f"cannot run {args[0]}: {exc}") from exc
        try:
            async with asyncio.timeout(self.commands.timeout):
                out, err = await process.communicate(stdin)
        except TimeoutError:
            raise BackendError(f"{Path(args[0]).name}: no answer within {self.commands.timeout:g}s") from None
        finally:
            if process.returncode is None:
                # Abandoned (timeout, or the lane's own deadline cancelled us): leave no child behind.
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        assert process.returncode is not None
        return CommandResult(
            process.returncode, out.decode("utf-8", errors="replace"), err.decode("utf-8", errors="replace")
        )

    @staticmethod
    def _failure(args: Sequence[str], result: CommandResult) -> BackendError:
        detail = next((line for line in reversed(result.stderr.splitlines()) if line.strip()), "no error message")
        return BackendError(f"{Path(args[0]).name} exited with {result.returncode}: {detail.strip()[:200]}")

    async def _checked(self, *args: str) -> str:
        result = await self.run(*args)
        if result.returncode != 0:
            raise self._failure(args, result)
        return result.stdout

    # -- submission ---------------------------------------------------------------------

    def _output_paths(self, backend_id: str) -> tuple[Path, Path]:
        return self.workdir / f"slurm-{backend_id}.out", self.workdir / f"slurm-{backend_id}.err"

    def _sbatch_args(self, spec: JobSpec) -> list[str]:
        if not spec.command:
            raise BackendError(f"job {spec.name!r} has no command")
        extra = list(self.options_for(spec)) if self.options_for is not None else []
        return [
            self.commands.sbatch,
            "--parsable",
            f"--job-name={spec.name or 'ganga-monitor'}",
            f"--chdir={self.workdir}",
            f"--output={self.workdir}/slurm-%j.out",
            f"--error={self.workdir}/slurm-%j.err",
            *self.sbatch_args,
            *extra,
            f"--wrap={shlex.join(spec.command)}",
        ]

    async def _submit_one(self, spec: JobSpec, slots: asyncio.Semaphore) -> str:
        args = self._sbatch_args(spec)
        async with slots:
            stdout = await self._checked(*args)
        # --parsable prints "<id>" or "<id>;<cluster>".
        backend_id = stdout.strip().split(";", 1)[0]
        if not backend_id.isdigit():
            raise MalformedAnswer(f"sbatch printed {stdout.strip()!r:.80}, not a job id")
        self._outputs[backend_id] = self._output_paths(backend_id)
        return backend_id

    async def submit(self, specs: Sequence[JobSpec]) -> list[str]:
        slots = asyncio.Semaphore(_SUBMIT_PARALLEL)
        answers = await asyncio.gather(*(self._submit_one(spec, slots) for spec in specs), return_exceptions=True)
        ids = [answer for answer in answers if isinstance(answer, str)]
        errors = [answer for answer in answers if isinstance(answer, BaseException)]
        if not errors:
            return ids
        # All or nothing: the caller keeps no record of a partial submission, so undo it.
        for backend_id in ids:
            with contextlib.suppress(BackendError):
                await self.kill(backend_id)
        first = errors[0]
        if isinstance(first, BackendError):
            raise type(first)(f"{len(errors)} of {len(specs)} submissions failed; first: {first}") from first
        raise first

    def adopt(self, backend_id: str) -> None:
        # Jobs are submitted with fixed output paths, so an earlier session's are known too.
        self._outputs.setdefault(backend_id, self._output_paths(backend_id))

    # -- status -------------------------------------------------------------------------

    async def _squeue(self, backend_ids: Sequence[str]) -> str:
        args = (self.commands.squeue, "-h", "-t", "all", "-j", ",".join(backend_ids), "-O", SQUEUE_FORMAT)
        result = await self.run(*args)
        if result.returncode == 0:
            return result.stdout
        if len(backend_ids) == 1 and _INVALID_ID in result.stderr:
            return ""  # squeue fails on a single unknown id where it would skip it in a list
        raise self._failure(args, result)

    async def poll(self, backend_ids: Sequence[str]) -> PollResult:
        for backend_id in backend_ids:
            if not backend_id.isdigit():
                raise BackendError(f"not a Slurm job id: {backend_id!r}")
        if not backend_ids:
            return PollResult()
        answer = parse_squeue(backend_ids, await self._squeue(backend_ids))
        result = answer.result
        if answer.missing:
            left = await self._resolve_left(answer.missing)
            result.reports.extend(left.reports)
            result.rejections.extend(left.rejections)
        return result

    async def _cluster_facts(self) -> _ClusterFacts:
        """Whether the cluster keeps accounting, and where its job completion log is (asked once)."""
        if self._facts is None:
            config: dict[str, str] = {}
            for line in (await self._checked(self.commands.scontrol, "show", "config")).splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    config[key.strip()] = value.strip()
            storage = config.get("AccountingStorageType", _NO_ACCOUNTING)
            jobcomp = None
            if config.get("JobCompType") == "jobcomp/filetxt" and config.get("JobCompLoc", "").startswith("/"):
                jobcomp = Path(config["JobCompLoc"])
            self._facts = _ClusterFacts(accounting=storage != _NO_ACCOUNTING, jobcomp_file=jobcomp)
        return self._facts

    async def _resolve_left(self, backend_ids: Sequence[str]) -> PollResult:
        """The end of jobs that squeue no longer shows."""
        facts = await self._cluster_facts()
        result = PollResult()
        pending = list(backend_ids)
        if facts.accounting:
            args = (self.commands.sacct, "-X", "-n", "-P", "-j", ",".join(pending), "-o", "JobID,State,ExitCode")
            merged = parse_sacct(pending, await self._checked(*args))
            result = merged
            known = _named(merged)
            pending = [b for b in pending if b not in known]
        if pending:
            slots = asyncio.Semaphore(_LOOKUP_PARALLEL)
            answers = await asyncio.gather(*(self._scontrol_job(b, slots) for b in pending), return_exceptions=True)
            for answer in answers:
                if isinstance(answer, BaseException):
                    raise answer
            for answer in answers:
                if isinstance(answer, StatusReport):
                    result.reports.append(answer)
                elif isinstance(answer, Rejection):
                    result.rejections.append(answer)
            pending = [b for b, answer in zip(pending, answers, strict=True) if answer is None]
        if pending and facts.jobcomp_file is not None:
            logged = parse_jobcomp(pending, await asyncio.to_thread(_read_text, facts.jobcomp_file))
            result.reports.extend(logged.reports)
            result.rejections.extend(logged.rejections)
            known = _named(logged)
            pending = [b for b in pending if b not in known]
        for backend_id in pending:
            result.rejections.append(
                Rejection(backend_id, "unknown_job", "Slurm no longer knows this job (purged, no record of its end)")
            )
        return result

    async def _scontrol_job(self, backend_id: str, slots: asyncio.Semaphore) -> StatusReport | Rejection | None:
        """``scontrol show job -o``'s word on one job, or ``None`` when the controller has purged it."""
        args = (self.commands.scontrol, "show", "job", "-o", backend_id)
        async with slots:
            result = await self.run(*args)
        if result.returncode != 0:
            if _INVALID_ID in result.stderr:
                return None
            raise self._failure(args, result)
        return parse_scontrol_job(backend_id, result.stdout)

    # -- output and kill -------------------------------------------------------------------

    async def _stdio_paths(self, backend_id: str) -> tuple[Path, Path]:
        known = self._outputs.get(backend_id)
        if known is not None:
            return known
        # Not submitted by this backend: ask the controller where the job wrote.
        args = (self.commands.scontrol, "show", "job", "-o", backend_id)
        result = await self.run(*args)
        if result.returncode != 0:
            if _INVALID_ID in result.stderr:
                return self._output_paths(backend_id)
            raise self._failure(args, result)
        fields = parse_key_values(result.stdout.strip())
        stdout, stderr = fields.get("StdOut", ""), fields.get("StdErr", "")
        if not stdout.startswith("/"):
            raise MalformedAnswer(f"scontrol: no StdOut path for job {backend_id}")
        paths = (Path(stdout), Path(stderr) if stderr.startswith("/") else Path(stdout))
        self._outputs[backend_id] = paths
        return paths

    async def fetch_output(self, backend_id: str, destination: Path) -> FetchResult:
        stdout, stderr = await self._stdio_paths(backend_id)
        return await asyncio.to_thread(_copy_stdio, backend_id, {"stdout": stdout, "stderr": stderr}, destination)

    async def kill(self, backend_id: str) -> None:
        if not backend_id.isdigit():
            raise BackendError(f"not a Slurm job id: {backend_id!r}")
        await self._checked(self.commands.scancel, backend_id)


def _named(result: PollResult) -> set[str]:
    """Job ids an answer says something about, believable or not."""
    return {r.backend_id for r in result.reports} | {r.backend_id for r in result.rejections if r.backend_id}


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise BackendError(f"cannot read {path}: {exc}") from exc


def _copy_stdio(backend_id: str, files: Mapping[str, Path], destination: Path) -> FetchResult:
    names = []
    copied: set[Path] = set()
    for name, source in files.items():
        if source in copied:
            continue  # stdout and stderr share one file
        try:
            shutil.copyfile(source, destination / name)
        except FileNotFoundError:
            if name == "stdout":
                raise OutputUnavailable(f"job {backend_id} left no output file {source}") from None
            continue
        except OSError as exc:
            raise BackendError(f"cannot copy {source}: {exc}") from exc
        copied.add(source)
        names.append(name)
    return FetchResult(tuple(names))
