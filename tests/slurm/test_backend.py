"""The Slurm backend's calls against the real test cluster, and against stand-ins that print garbage.

The stand-ins are small shell scripts given to the backend as its command paths: the real
subprocess path runs, only the words on the pipe are wrong.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from monitor_core import BreakerChanged, EventBus, JobSpec, JobStatus, OpFinished, OutputSink, Scheduler
from monitor_core.backends import BackendError, MalformedAnswer
from monitor_core.backends._slurm_parse import SLURM_STATES
from monitor_core.backends.slurm import SlurmBackend

from ..conftest import until
from ..core.conftest import FAST
from .conftest import MakeSlurmBackend, SlurmCluster

pytestmark = pytest.mark.slurm

SQUEUE = shutil.which("squeue") or "/usr/bin/squeue"


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def _sh(text: str) -> tuple[str, ...]:
    return ("/bin/sh", "-c", text)


async def status_of(backend: SlurmBackend, backend_id: str) -> JobStatus | None:
    result = await backend.poll([backend_id])
    assert not result.rejections
    return result.reports[0].status if result.reports else None


async def final_of(backend: SlurmBackend, backend_id: str) -> bool:
    status = await status_of(backend, backend_id)
    return status is not None and status.is_final


async def eventually(check: Callable[[], Awaitable[object]], wanted: object, within: float = 60.0) -> None:
    """Ask the cluster until ``check()`` gives ``wanted``: a test watches Slurm from outside, there is no event."""
    async with asyncio.timeout(within):
        while await check() != wanted:  # noqa: ASYNC110 - see the docstring
            await asyncio.sleep(0.2)


def test_installed_slurm_names_exactly_the_mapped_states(slurm_cluster: SlurmCluster) -> None:
    done = subprocess.run(
        [SQUEUE, "-h", "-t", "NOT_A_STATE"], env=slurm_cluster.env, capture_output=True, text=True, check=False
    )
    assert done.returncode != 0
    listed = done.stderr.strip().splitlines()[-1].split()[-1].split(",")
    assert set(listed) == set(SLURM_STATES), done.stderr


async def test_submit_poll_fetch_kill(make_slurm_backend: MakeSlurmBackend, tmp_path: Path) -> None:
    backend = make_slurm_backend()
    await backend.start()
    ok, bad, long = await backend.submit(
        [
            JobSpec("ok", "slurm", command=_sh("echo to-out; echo to-err >&2")),
            JobSpec("bad", "slurm", command=_sh("echo failing; exit 42")),
            JobSpec("long", "slurm", command=("sleep", "300")),
        ]
    )

    await eventually(lambda: status_of(backend, long), JobStatus.RUNNING)
    await backend.kill(long)
    for backend_id in (ok, bad, long):
        await eventually(lambda b=backend_id: final_of(backend, b), True)
    by_id = {r.backend_id: r for r in (await backend.poll([ok, bad, long])).reports}
    assert (by_id[ok].status, by_id[ok].exit_code) == (JobStatus.COMPLETED, 0)
    assert (by_id[bad].status, by_id[bad].exit_code) == (JobStatus.FAILED, 42)
    assert by_id[long].status == JobStatus.KILLED
    destination = tmp_path / "fetched"
    destination.mkdir()
    fetched = await backend.fetch_output(ok, destination)
    assert fetched.files == ("stdout", "stderr")
    assert (destination / "stdout").read_text() == "to-out\n"
    assert (destination / "stderr").read_text() == "to-err\n"


async def test_unknown_ids_are_rejected_single_or_in_a_list(make_slurm_backend: MakeSlurmBackend) -> None:
    backend = make_slurm_backend()
    await backend.start()
    for ids in (["999999"], ["999998", "999999"]):
        result = await backend.poll(ids)
        assert result.reports == []
        assert sorted((r.backend_id, r.category) for r in result.rejections) == [(i, "unknown_job") for i in ids]
    with pytest.raises(BackendError, match="not a Slurm job id"):
        await backend.poll(["12; rm -rf /"])


async def test_output_of_a_job_submitted_elsewhere_is_found_through_scontrol(
    slurm_cluster: SlurmCluster, make_slurm_backend: MakeSlurmBackend, tmp_path: Path
) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        ["sbatch", "--parsable", f"--output={tmp_path}/elsewhere-%j.txt", "--wrap", "echo from elsewhere"],
        env=slurm_cluster.env,
        capture_output=True,
        text=True,
        check=True,
    )
    backend_id = done.stdout.strip()
    backend = make_slurm_backend()
    await backend.start()
    await until(lambda: (tmp_path / f"elsewhere-{backend_id}.txt").exists(), within=30)
    await eventually(lambda: status_of(backend, backend_id), JobStatus.COMPLETED)
    destination = tmp_path / "out"
    destination.mkdir()
    assert (await backend.fetch_output(backend_id, destination)).files == ("stdout",)
    assert (destination / "stdout").read_text() == "from elsewhere\n"


async def test_broken_commands_are_backend_errors(make_slurm_backend: MakeSlurmBackend, tmp_path: Path) -> None:
    spec = [JobSpec("x", "slurm", command=("true",))]
    missing = make_slurm_backend(sbatch=str(tmp_path / "no-such-sbatch"), squeue=str(tmp_path / "no-such-squeue"))
    await missing.start()
    with pytest.raises(BackendError, match="cannot run"):
        await missing.submit(spec)
    with pytest.raises(BackendError, match="cannot run"):
        await missing.poll(["1"])
    chatty = make_slurm_backend(sbatch=_script(tmp_path / "sbatch", "echo 'Submitted batch job, maybe'\n"))
    await chatty.start()
    with pytest.raises(MalformedAnswer):
        await chatty.submit(spec)
    refusing = make_slurm_backend(sbatch=_script(tmp_path / "sbatch-no", "echo 'sbatch: error: no' >&2; exit 1\n"))
    await refusing.start()
    with pytest.raises(BackendError, match="sbatch-no exited with 1: sbatch: error: no"):
        await refusing.submit(spec)
    with pytest.raises(BackendError, match="job 'empty' has no command"):
        await refusing.submit([JobSpec("empty", "slurm")])


async def test_a_hanging_command_is_killed_at_its_timeout(make_slurm_backend: MakeSlurmBackend, tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    backend = make_slurm_backend(squeue=_script(tmp_path / "squeue", f"echo $$ > {marker}; exec sleep 600\n"))
    backend.commands = replace(backend.commands, timeout=0.5)
    await backend.start()
    with pytest.raises(BackendError, match=r"no answer within 0\.5s"):
        await backend.poll(["1"])
    pid = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped, not left running


async def test_garbage_and_failures_are_counted_and_monitoring_goes_on(
    make_slurm_backend: MakeSlurmBackend, tmp_path: Path
) -> None:
    mode = tmp_path / "mode"
    mode.write_text("garbage")
    fake = _script(
        tmp_path / "squeue",
        f"""case "$(cat {mode})" in
fail) echo "squeue: error: told to fail" >&2; exit 1 ;;
garbage)
    out=$({SQUEUE} "$@") || exit $?
    printf '%s\\n' "$out" | sed -e 's/|RUNNING|/|LEVITATING|/' -e '$s/|[^|]*|$//'
    echo "this is not a squeue line" ;;
*) exec {SQUEUE} "$@" ;;
esac
""",
    )
    backend: SlurmBackend = make_slurm_backend(squeue=fake)
    bus = EventBus()
    subscription = bus.subscribe(name="test")
    specs = [
        JobSpec(
            f"g{i}",
            "slurm",
            command=_sh(f"sleep {2 + i % 4}; echo g{i}; exit {i % 3}"),
            expected=JobStatus.COMPLETED if i % 3 == 0 else JobStatus.FAILED,
        )
        for i in range(12)
    ]
    async with Scheduler([backend], bus=bus, outputs=OutputSink(tmp_path / "outputs"), config=FAST) as scheduler:
        jobs = await scheduler.submit(specs)
        await until(
            lambda: scheduler.counters["rejections.unknown_state"] > 0 and scheduler.counters["rejections.garbage"] > 0,
            within=60,
        )
        mode.write_text("fail")
        await until(lambda: scheduler.lanes["slurm"].breaker.state != "closed", within=60)
        mode.write_text("pass")
        async with asyncio.timeout(120):
            await scheduler.wait_all_final()
        for job in jobs:
            assert job.status == job.expected, job
            assert job.job_id in scheduler.outputs_collected
            assert (tmp_path / "outputs" / job.job_id / "stdout").read_text() == f"{job.name}\n"
    events = []
    while (event := subscription.receive_nowait()) is not None:
        events.append(event)
    assert any(isinstance(e, BreakerChanged) and e.state == "open" for e in events)
    assert any(
        isinstance(e, OpFinished)
        and e.outcome == "error"
        and "squeue exited with 1: squeue: error: told to fail" in (e.error or "")
        for e in events
    )
