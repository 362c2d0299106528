"""Fixtures shared by every test directory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psutil
import pytest

from monitor_core.sim import DiracSimConfig, DiracSimProcess

pytest_plugins = ["tests.slurm_cluster"]

_WORKER_GROUPS = {
    "slurm_cluster": "slurm-and-ganga",
    "ganga_session": "slurm-and-ganga",
    "ganga_installed": "slurm-and-ganga",
    "diracx_service": "diracx",
    "mosquitto": "mosquitto",
    "broker": "mosquitto",
}
"""Tests that share a session-wide component run on one test worker, which starts it once."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Before pytest-xdist's own hook, which reads these marks (``--dist loadgroup``).
    for item in items:
        names = getattr(item, "fixturenames", ())
        group = next((group for fixture, group in _WORKER_GROUPS.items() if fixture in names), None)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session", autouse=True)
def _no_grid_outlives_the_tests(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Stop the simulated grids that demo sessions of this run left for a resume.

    A session that ends with jobs still on its grid leaves the grid running, as a real one
    would (it stops by itself when idle); the tests do not wait for that. Sessions given no
    state directory make theirs under ``$XDG_STATE_HOME``, which points under the run's
    temporary directory too, so that no test writes into the home directory.
    """
    base = str(tmp_path_factory.getbasetemp())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))
        yield
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error, ValueError):
            cmdline = process.info["cmdline"] or []
            if "monitor_core.sim.dirac_server" in cmdline and "--state-dir" in cmdline:
                state_dir = cmdline[cmdline.index("--state-dir") + 1]
                if Path(state_dir).is_relative_to(base):
                    process.kill()


@pytest.fixture
async def dirac_service() -> AsyncIterator[DiracSimProcess]:
    """A simulated DIRAC service process on a free loopback port, fast and fault-free."""
    service = DiracSimProcess(
        DiracSimConfig(
            latency_median=0.02, latency_per_job=0.0, queue_time=0.3, completing_time=0.1, output_latency=0.01
        )
    )
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def until(predicate: Callable[[], object], within: float = 10.0) -> None:
    """Wait until ``predicate()`` holds, checking between event-loop turns.

    Tests observe state they do not own, so there is no event to wait on; this is the one
    place that polls for it.
    """
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - see the docstring
            await asyncio.sleep(0.005)


async def local_job_started(workdir: Path, backend_id: str) -> tuple[int, float]:
    """Wait until the local backend working in ``workdir`` has started a job's process: its pid and start time.

    Read from the ``pid`` file the backend writes into the job's directory once the process runs.
    """
    pid_file = workdir / backend_id / "pid"
    await until(pid_file.exists)
    pid, started = pid_file.read_text().split()
    return int(pid), float(started)
