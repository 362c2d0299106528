"""The ``diracx`` backend of a demo session: a local DiracX, its pilots, or a real installation.

``--demo --backend diracx`` starts ``scripts/diracx-local`` (or reuses the service it left
running) and a :class:`~monitor_core.sim.diracx_pilots.PilotFleet` that runs each demo job
as the workload planned it. ``--diracx-url URL`` instead watches a real installation with
the tokens ``dirac login`` wrote: nothing is submitted there; the user's jobs that are not
finished are adopted and followed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Final

from .._model import Job, JobSpec, JobStatus
from ..backends._base import BackendError
from ..backends.diracx import (
    DEFAULT_CAPABILITIES,
    DiracxBackend,
    admin_tokens,
    local_env_file,
    pilot_tokens,
    read_env_file,
    user_tokens,
)
from ..backends.diracx_delta import STATUS_PARAMETERS, parse_row
from ..backends.diracx_states import FINAL_DIRACX_STATUSES
from .diracx_pilots import JobPlan, PilotConfig, PilotFleet

__all__ = ["SCRIPT", "DiracxDemo", "adopt_active_jobs", "ensure_local_service"]

log = logging.getLogger(__name__)

SCRIPT: Final = Path(__file__).resolve().parents[2] / "scripts" / "diracx-local"


async def ensure_local_service(script: Path = SCRIPT, *, limit: float = 600.0) -> Path:
    """Start ``scripts/diracx-local`` unless it already runs; return its env file.

    Raises:
        RuntimeError: the script is missing or could not start the service.
    """
    env_file = local_env_file()
    if not await asyncio.to_thread(script.exists):
        raise RuntimeError(f"{script} not found: the diracx demo needs the project's scripts/diracx-local")
    process = await asyncio.create_subprocess_exec(
        str(script),
        "up",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(process.communicate(), limit)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"scripts/diracx-local up took more than {limit:g} s") from None
    if process.returncode != 0 or not await asyncio.to_thread(env_file.exists):
        raise RuntimeError(f"scripts/diracx-local up failed: {err.decode(errors='replace').strip()[-600:]}")
    return env_file


class DiracxDemo:
    """A local DiracX service and its pilots, for as long as a demo session runs.

    Args:
        poll_interval: the backend's target poll interval (``None``: its default).
        mean_run_time: mean seconds a job runs, for jobs the workload did not plan.
        seed: the pilots' random seed.
    """

    def __init__(self, *, poll_interval: float | None = None, mean_run_time: float = 8.0, seed: int = 7) -> None:
        self.poll_interval = poll_interval
        self.config = PilotConfig(mean_run_time=mean_run_time, stall_rate=0.02, seed=seed)
        self.plans: dict[str, JobPlan] = {}
        self.fleet: PilotFleet | None = None

    async def start(self) -> DiracxBackend:
        """Bring the service up (or reuse it), start the pilots, and return the backend.

        Raises:
            RuntimeError: the service could not be started.
        """
        env_file = await ensure_local_service()
        env = read_env_file(env_file)
        caps = DEFAULT_CAPABILITIES
        if self.poll_interval is not None:
            caps = replace(caps, poll_interval=self.poll_interval)
        backend = DiracxBackend.from_env_file(env_file, capabilities=caps)
        self.fleet = PilotFleet(
            env["DIRACX_URL"], pilot_tokens(env), user_tokens(env), admin_tokens(env), self.config, self._plan
        )
        await self.fleet.__aenter__()
        return backend

    def expect(self, specs: Sequence[JobSpec]) -> None:
        """Let the pilots run these jobs as planned (by JobName)."""
        for spec in specs:
            self.plans[spec.name] = JobPlan(max(0.5, spec.duration), "done" if spec.exit_code == 0 else "failed")

    def _plan(self, job_id: int, name: str) -> JobPlan:
        plan = self.plans.get(name)
        if plan is not None:
            return plan
        assert self.fleet is not None
        return self.fleet.draw(job_id, name)

    async def stop(self) -> None:
        """Stop the pilots; the service stays up for the next demo (``scripts/diracx-local down``)."""
        if self.fleet is not None:
            await self.fleet.close()
            self.fleet = None


def watching_backend(url: str, *, poll_interval: float | None = None) -> DiracxBackend:
    """The backend of a real installation, with the tokens ``dirac login`` wrote."""
    caps = DEFAULT_CAPABILITIES if poll_interval is None else replace(DEFAULT_CAPABILITIES, poll_interval=poll_interval)
    verify: bool | str = os.environ.get("DIRACX_CA_PATH") or True
    return DiracxBackend.from_login(url, capabilities=caps, verify=verify)


async def adopt_active_jobs(backend: DiracxBackend, *, limit: int = 10_000) -> list[Job]:
    """The user's unfinished jobs in the installation, as jobs for the session to follow.

    Raises:
        BackendError: the service could not be asked.
    """
    finals = sorted(FINAL_DIRACX_STATUSES)
    body = {
        "parameters": [*STATUS_PARAMETERS, "JobName", "JobGroup"],
        "search": [{"parameter": "Status", "operator": "not in", "values": finals}],
        "sort": [{"parameter": "JobID", "direction": "desc"}],
    }
    _, rows = await backend.client.json(
        "POST", "/api/jobs/search", kind="adopt", params={"per_page": limit}, json_body=body, ok=(200, 206)
    )
    if not isinstance(rows, list):
        raise BackendError("adopt: the search did not answer a list")
    jobs = []
    for row in rows:
        parsed = parse_row(row)
        if not isinstance(parsed, tuple):
            continue
        job_id, state = parsed
        report = state.report(str(job_id))
        backend.adopt(str(job_id))
        jobs.append(
            Job(
                job_id=f"{backend.name}-{job_id}",
                backend=backend.name,
                name=str(row.get("JobName") or ""),
                group=str(row.get("JobGroup") or ""),
                backend_id=str(job_id),
                status=report.status if report.status != JobStatus.NEW else JobStatus.SUBMITTED,
                status_since=time.time(),
                info=report.info,
            )
        )
    return jobs
