"""The ``diracx`` backend: DIRAC jobs through DiracX's REST API, asyncio end to end.

Polls are of two kinds (see :mod:`.diracx_delta`). A job the backend has not read yet, or
has answered from deltas ``full_every - 1`` times, is read in full: ``POST /api/jobs/search``
with ``JobID in [...]``, up to 10,000 ids a call, paged on 206 + ``Content-Range``. Every
other job is confirmed by a *delta*: one search for whatever changed since the last delta
began (``LastUpdateTime gt`` a horizon), shared by every poll that asks at about the same
time. A job no delta names has not changed, so it is confirmed as it was; the full reads
every few intervals re-read everything in case that reasoning ever failed.

Each answer is checked: an unknown status, a row that is not a job record, or a status
DIRAC's state machine could not reach from the last one seen is refused and counted, and the
job is not confirmed by that poll. Outputs come from the presigned URL DiracX hands out for
the job's output sandbox (``tar.bz2`` or ``tar.zst``), unpacked into the job's directory.

Needs the ``diracx`` extra (``httpx``, ``zstandard``).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import tarfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

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
)
from .diracx_delta import STATUS_PARAMETERS, StatusCache, format_since
from .diracx_http import CredentialsFile, DiracxClient, LegacyExchange, TokenSource

__all__ = [
    "DEFAULT_CAPABILITIES",
    "MAX_PER_PAGE",
    "SUBMIT_CHUNK",
    "DiracxBackend",
    "PollCounters",
    "jdl_for",
    "read_env_file",
]

log = logging.getLogger(__name__)

MAX_PER_PAGE: Final = 10_000
"""DiracX's largest search page."""
SUBMIT_CHUNK: Final = 20
"""Most JDLs DiracX takes in one submission from a normal user."""
_SUBMIT_PARALLEL: Final = 2


DEFAULT_CAPABILITIES: Final = Capabilities(
    max_batch=MAX_PER_PAGE,
    max_concurrency=2,
    fetch_concurrency=8,
    poll_interval=10.0,
    call_timeout=30.0,
    # Sandboxes come from the storage through presigned URLs, not from the service's allowance.
    fetch_outside_allowance=True,
)
_CONTENT_RANGE: Final = re.compile(r"jobs (\d+)-(\d+)/(\d+)")
_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"


@dataclass(slots=True)
class PollCounters:
    """How the backend's polls were answered; the label of the last one for the views."""

    full_reads: int = 0
    """Searches by ``JobID in [...]`` (one per page)."""
    delta_reads: int = 0
    """Searches by ``LastUpdateTime gt`` (one per page)."""
    delta_shared: int = 0
    """Polls answered by a delta another poll had just made."""
    confirmed_full: int = 0
    confirmed_delta: int = 0
    delta_rows: int = 0
    last_label: str = ""
    """What the last poll was, e.g. ``delta since 12:00:03 (40 rows): 9,800 confirmed``."""


def jdl_for(spec: JobSpec) -> str:
    """A JDL for a job spec: its name, group, command, and stdout/stderr as its output sandbox."""

    def quote(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    command = spec.command or ("/bin/true",)
    lines = [
        f"JobName = {quote(spec.name)};",
        f"Executable = {quote(command[0])};",
        f"StdOutput = {quote('std.out')};",
        f"StdError = {quote('std.err')};",
        'OutputSandbox = {"std.out", "std.err"};',
    ]
    if len(command) > 1:
        lines.append(f"Arguments = {quote(' '.join(command[1:]))};")
    if spec.group:
        lines.append(f"JobGroup = {quote(spec.group)};")
    return "\n".join(lines)


def read_env_file(path: Path) -> dict[str, str]:
    """The ``export KEY=VALUE`` lines ``scripts/diracx-local`` writes."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export ") :].partition("=")
            values[key.strip()] = value.strip().strip("'\"")
    return values


class DiracxBackend(Backend):
    """Jobs in a DiracX installation.

    Args:
        client: the authenticated client of the service.
        name: the backend's name on the bus.
        capabilities: limits (``max_batch`` at most 10,000, DiracX's page size).
        margin: seconds a delta's horizon is moved back for clock skew and in-flight updates.
        full_every: one poll in this many reads a job in full again (the safety net).
        delta: ``False`` reads every job in full on every poll (for comparison).
        delta_share: seconds a delta stays good for polls that ask after it began.
        page_size: rows per search page (DiracX allows up to 10,000).
    """

    def __init__(
        self,
        client: DiracxClient,
        *,
        name: str = "diracx",
        capabilities: Capabilities = DEFAULT_CAPABILITIES,
        margin: float = 5.0,
        full_every: int = 10,
        delta: bool = True,
        delta_share: float = 1.0,
        page_size: int = MAX_PER_PAGE,
    ) -> None:
        if capabilities.max_batch > MAX_PER_PAGE or not 1 <= page_size <= MAX_PER_PAGE:
            raise ValueError(f"DiracX answers at most {MAX_PER_PAGE} jobs a call")
        self.page_size = page_size
        super().__init__(name, capabilities)
        self.client = client
        self.cache = StatusCache(margin=margin, full_every=full_every if delta else 1)
        self.delta = delta
        self.delta_share = delta_share
        self.counters = PollCounters()
        self.downloads: Counter[str] = Counter()
        """Output sandboxes downloaded, per job: each must be 1."""
        self._delta_lock = asyncio.Lock()
        self._last_delta_began = float("-inf")

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def from_login(
        cls, url: str, *, credentials: Path | None = None, verify: bool | str = True, **options: Any
    ) -> DiracxBackend:
        """Watch an installation with the tokens ``dirac login`` wrote (``DIRACX_CREDENTIALS_PATH``)."""
        return cls(DiracxClient(url, CredentialsFile(credentials), verify=verify), **options)

    @classmethod
    def from_env_file(cls, env_file: Path, **options: Any) -> DiracxBackend:
        """The user of a ``scripts/diracx-local`` service, through its legacy exchange."""
        env = read_env_file(env_file)
        return cls(DiracxClient(env["DIRACX_URL"], user_tokens(env)), **options)

    # -- the contract ----------------------------------------------------------------------------

    async def close(self) -> None:
        await self.client.close()

    def adopt(self, backend_id: str) -> None:
        if backend_id.isdigit():
            self.cache.track([int(backend_id)])

    async def submit(self, specs: Sequence[JobSpec]) -> list[str]:
        chunks = [specs[i : i + SUBMIT_CHUNK] for i in range(0, len(specs), SUBMIT_CHUNK)]
        gate = asyncio.Semaphore(_SUBMIT_PARALLEL)

        async def one(chunk: Sequence[JobSpec]) -> list[str]:
            async with gate:
                _, body = await self.client.json(
                    "POST", "/api/jobs/jdl", kind="submit", json_body=[jdl_for(s) for s in chunk], ok=(200, 201)
                )
            if not isinstance(body, list) or len(body) != len(chunk):
                raise MalformedAnswer("submit: expected one inserted job per JDL")
            ids = []
            for entry in body:
                job_id = entry.get("JobID") if isinstance(entry, dict) else None
                if not isinstance(job_id, int):
                    raise MalformedAnswer(f"submit: entry without a JobID: {entry!r:.80}")
                ids.append(job_id)
            self.cache.track(ids)
            return [str(i) for i in ids]

        results = await asyncio.gather(*(one(c) for c in chunks))
        return [job_id for ids in results for job_id in ids]

    async def kill(self, backend_id: str) -> None:
        if not backend_id.isdigit():
            raise BackendError(f"not a DiracX job id: {backend_id!r}")
        now = datetime.now(UTC).isoformat()
        update = {"Status": "Killed", "MinorStatus": "Marked as killed", "Source": "User"}
        _, body = await self.client.json(
            "PATCH", "/api/jobs/status", kind="kill", json_body={backend_id: {now: update}}
        )
        if not isinstance(body, dict):
            raise MalformedAnswer("kill: the answer is not a mapping")
        failed, success = body.get("failed") or {}, body.get("success") or {}
        if failed:
            raise BackendError(f"kill {backend_id}: {failed.get(backend_id, failed)!r:.200}")
        # DiracX takes an illegal move (killing a finished job) without complaint and changes
        # nothing: only a success entry with the new status says the job was killed.
        entry = success.get(backend_id)
        if not isinstance(entry, dict) or entry.get("Status") != "Killed":
            raise BackendError(f"kill {backend_id}: DiracX left the job as it was (already finished?)")

    async def poll(self, backend_ids: Sequence[str]) -> PollResult:
        asked_at = time.time()
        result = PollResult()
        numeric: list[int] = []
        for backend_id in backend_ids:
            if backend_id.isdigit():
                numeric.append(int(backend_id))
            else:
                result.rejections.append(Rejection(backend_id, "unknown_job", "not a DiracX job id"))
        self.cache.track(numeric)
        full, by_delta = self.cache.split(numeric)
        self.cache.read_started(time.time() + self.client.server_skew)
        refused: set[str] = set()
        if by_delta:
            shared, delta_rejections = await self._refresh_by_delta(asked_at)
            result.rejections.extend(delta_rejections)
            refused.update(r.backend_id for r in delta_rejections if r.backend_id)
        answered: list[int] = []
        if full:
            rows = await self._search([{"parameter": "JobID", "operator": "in", "values": full}], kind="full")
            found = {row.get("JobID") for row in rows if isinstance(row, dict)}
            full_rejections = self.cache.merge(rows, full=True)
            result.rejections.extend(full_rejections)
            refused.update(r.backend_id for r in full_rejections if r.backend_id)
            for job_id in full:
                if job_id in found:
                    answered.append(job_id)
                else:
                    self.cache.states.pop(job_id, None)  # not to be confirmed from an old answer
                    answered.append(job_id)  # answer() refuses it as unknown
        answered.extend(by_delta)
        reports, unknown = self.cache.answer(
            [j for j in answered if str(j) not in refused], confirmed_by_delta=set(by_delta)
        )
        result.reports.extend(reports)
        result.rejections.extend(unknown)
        self.counters.confirmed_full += len(full)
        self.counters.confirmed_delta += len(by_delta)
        label = f"{len(full)} read in full" if full else ""
        if by_delta:
            since = datetime.fromtimestamp(self.cache.since(), UTC).strftime("%H:%M:%S")
            delta_label = f"{len(by_delta)} confirmed by the delta since {since}" + (" (shared)" if shared else "")
            label = f"{label}, {delta_label}" if label else delta_label
        self.counters.last_label = label
        log.debug("%s: poll of %d jobs: %s", self.name, len(backend_ids), label)
        return PollResult(result.reports, result.rejections, detail=label)

    async def _refresh_by_delta(self, asked_at: float) -> tuple[bool, list[Rejection]]:
        """Bring the cache up to a delta that began no earlier than ``asked_at - delta_share``.

        Returns:
            whether an earlier poll's delta was good enough, and the delta's rejections.
        """
        async with self._delta_lock:
            if self._last_delta_began >= asked_at - self.delta_share:
                self.counters.delta_shared += 1
                return True, []
            began = time.time()
            service_began = began + self.client.server_skew
            rows = await self._search(
                [{"parameter": "LastUpdateTime", "operator": "gt", "value": format_since(self.cache.since())}],
                kind="delta",
            )
            rejections = self.cache.merge(rows, full=False)
            self.cache.delta_succeeded(service_began)
            self._last_delta_began = began
            self.counters.delta_rows += len(rows)
            return False, rejections

    async def _search(self, search: list[dict[str, Any]], *, kind: str) -> list[Any]:
        """Every row of a search, page by page (206 + ``Content-Range`` until the last).

        Raises:
            BackendError: a page failed.
            MalformedAnswer: a page is not a list, or its range makes no sense.
        """
        body = {
            "parameters": list(STATUS_PARAMETERS),
            "search": search,
            "sort": [{"parameter": "JobID", "direction": "asc"}],
        }
        rows: list[Any] = []
        page = 1
        while True:
            answer, data = await self.client.json(
                "POST",
                "/api/jobs/search",
                kind=f"search-{kind}",
                params={"page": page, "per_page": self.page_size},
                json_body=body,
                ok=(200, 206, 416),
            )
            if kind == "delta":
                self.counters.delta_reads += 1
            else:
                self.counters.full_reads += 1
            if answer.status_code == 416:
                return rows  # the result shrank under us: nothing past the last page
            if not isinstance(data, list):
                raise MalformedAnswer(f"search: expected a list of jobs, got {type(data).__name__}")
            rows.extend(data)
            if answer.status_code == 200:
                return rows
            match = _CONTENT_RANGE.fullmatch(answer.headers.get("content-range", ""))
            if match is None:
                raise MalformedAnswer(
                    f"search: 206 without a usable Content-Range ({answer.headers.get('content-range')!r})"
                )
            last, total = int(match.group(2)), int(match.group(3))
            if last + 1 >= total or not data:
                return rows
            page += 1

    async def fetch_output(self, backend_id: str, destination: Path) -> FetchResult:
        if not backend_id.isdigit():
            raise OutputUnavailable(f"not a DiracX job id: {backend_id!r}")
        answer, pfns = await self.client.json(
            "GET", f"/api/jobs/{backend_id}/sandbox/output", kind="sandbox-list", ok=(200, 404)
        )
        if answer.status_code == 404:
            raise OutputUnavailable(f"DiracX does not know job {backend_id}")
        if not isinstance(pfns, list) or not all(isinstance(p, str) for p in pfns):
            raise MalformedAnswer("sandbox-list: expected a list of PFNs")
        if not pfns:
            raise OutputUnavailable("the job left no output sandbox")
        files: list[str] = []
        for pfn in pfns:
            _, info = await self.client.json("GET", "/api/jobs/sandbox", kind="sandbox-url", params={"pfn": pfn})
            url = info.get("url") if isinstance(info, dict) else None
            if not isinstance(url, str):
                raise MalformedAnswer("sandbox-url: no presigned URL in the answer")
            data = await self.client.download(url, kind="sandbox-download")
            files.extend(await asyncio.to_thread(unpack_sandbox, data, destination))
        self.downloads[backend_id] += 1
        return FetchResult(tuple(sorted(set(files))))


def unpack_sandbox(data: bytes, destination: Path) -> list[str]:
    """Unpack a ``tar.bz2`` or ``tar.zst`` sandbox into ``destination``; its regular files only.

    Raises:
        MalformedAnswer: the archive is neither, or is damaged.
    """
    try:
        if data.startswith(_ZSTD_MAGIC):
            import zstandard

            data, mode = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read(), "r:"
        elif data.startswith(b"BZh"):
            mode = "r:bz2"
        else:
            raise MalformedAnswer("sandbox is neither tar.bz2 nor tar.zst")
        with tarfile.open(fileobj=io.BytesIO(data), mode=mode) as archive:  # type: ignore[call-overload]
            members = [m for m in archive.getmembers() if m.isfile()]
            # The "data" filter refuses absolute paths, "..", links out and device files.
            archive.extractall(destination, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # a local disk fault, not the sandbox's
        raise MalformedAnswer(f"damaged sandbox: {exc}") from exc
    except ImportError as exc:
        raise MalformedAnswer("a tar.zst sandbox needs the zstandard package (the diracx extra)") from exc
    return [m.name for m in members]


def user_tokens(env: dict[str, str]) -> TokenSource:
    """The legacy-exchange token source of the user in a ``scripts/diracx-local`` env file."""
    return LegacyExchange(env["DIRACX_LEGACY_SECRET"], env["DIRACX_USER"], env["DIRACX_VO"], env["DIRACX_USER_GROUP"])


def pilot_tokens(env: dict[str, str]) -> TokenSource:
    """The legacy-exchange token source of the pilot identity (``GenericPilot``)."""
    return LegacyExchange(
        env["DIRACX_LEGACY_SECRET"], env["DIRACX_PILOT_USER"], env["DIRACX_VO"], env["DIRACX_PILOT_GROUP"]
    )


def admin_tokens(env: dict[str, str]) -> TokenSource:
    """The legacy-exchange token source of the administrator (``JobAdministrator``)."""
    return LegacyExchange(
        env["DIRACX_LEGACY_SECRET"], env["DIRACX_ADMIN_USER"], env["DIRACX_VO"], env["DIRACX_ADMIN_GROUP"]
    )


def local_env_file() -> Path:
    """Where ``scripts/diracx-local`` writes its env file (``$DIRACX_LOCAL_DIR/env``)."""
    return Path(os.environ.get("DIRACX_LOCAL_DIR") or "/tmp/diracx-local") / "env"
