"""The diracx backend's calls against a real DiracX 0.7 service: submit, status, kill, tokens, sandboxes."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import tarfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import zstandard

from monitor_core import JobSpec, JobStatus
from monitor_core.backends import BackendError, MalformedAnswer, OutputUnavailable, PollResult, ServiceUnreachable
from monitor_core.backends.diracx import DiracxBackend, unpack_sandbox, user_tokens
from monitor_core.backends.diracx_http import CredentialsFile, DiracxClient
from monitor_core.sim.diracx_pilots import JobPlan, PilotConfig, PilotFleet, make_sandbox

from .conftest import DiracxService

pytestmark = pytest.mark.diracx


def specs(prefix: str, count: int) -> list[JobSpec]:
    return [JobSpec(f"{prefix}-{i}", "diracx", group=prefix) for i in range(count)]


async def pilot_move(service: DiracxService, job_ids: list[str], *statuses: str) -> None:
    """Move jobs as a pilot would (several timed updates in one request)."""
    env = service.env
    from monitor_core.backends.diracx import pilot_tokens

    client = DiracxClient(env["DIRACX_URL"], pilot_tokens(env))
    try:
        now = datetime.now(UTC).timestamp()
        body = {
            job_id: {
                datetime.fromtimestamp(now + step * 1e-3, UTC).isoformat(): {
                    "Status": status,
                    "MinorStatus": f"test {status}",
                    "Source": "JobWrapper",
                }
                for step, status in enumerate(statuses)
            }
            for job_id in job_ids
        }
        _, data = await client.json("PATCH", "/api/jobs/status", kind="test", json_body=body)
        assert not data["failed"], data
    finally:
        await client.close()


async def poll_until_final(backend: DiracxBackend, ids: list[str]) -> PollResult:
    """Poll every 0.3 s until the service says every job is final (a minute at most)."""
    async with asyncio.timeout(60):
        while True:
            result = await backend.poll(ids)
            if all(r.status.is_final for r in result.reports):
                return result
            await asyncio.sleep(0.3)


async def test_submits_in_chunks_of_twenty_and_pages_a_bulk_read(diracx_service: DiracxService) -> None:
    backend = diracx_service.backend(page_size=10)
    try:
        ids = await backend.submit(specs("chunks", 45))
        assert len(ids) == len(set(ids)) == 45
        assert backend.client.stats.by_kind["submit"] == 3  # 20 + 20 + 5
        result = await backend.poll(ids)
        assert not result.rejections
        assert [r.backend_id for r in result.reports] == ids
        assert {r.status for r in result.reports} == {JobStatus.SUBMITTED}
        assert all(r.info.startswith("Received") for r in result.reports)
        assert backend.client.stats.by_kind["search-full"] == 5  # 206 + Content-Range, page by page
    finally:
        await backend.close()


async def test_delta_confirms_unchanged_jobs_and_reads_only_what_changed(diracx_service: DiracxService) -> None:
    backend = diracx_service.backend(full_every=100, margin=1.0)
    try:
        ids = await backend.submit(specs("delta", 60))
        await asyncio.sleep(3.0)  # past the margin: the submission itself is then old news
        await backend.poll(ids)
        full_bytes = backend.client.stats.bytes_received
        assert backend.counters.last_label == "60 read in full"
        await pilot_move(diracx_service, ids[:3], "Checking", "Waiting", "Matched", "Running")
        before = backend.client.stats.bytes_received
        result = await backend.poll(ids)
        assert not result.rejections
        assert "60 confirmed by the delta" in backend.counters.last_label
        by_id = {r.backend_id: r for r in result.reports}
        assert len(by_id) == 60
        assert {by_id[i].status for i in ids[:3]} == {JobStatus.RUNNING}
        assert {by_id[i].status for i in ids[3:]} == {JobStatus.SUBMITTED}
        # Only the changed jobs (and any others of the user changed in the margin) came back.
        assert backend.client.stats.bytes_received - before < full_bytes / 2
    finally:
        await backend.close()


async def test_kill_and_unknown_jobs(diracx_service: DiracxService, backend: DiracxBackend) -> None:
    job_id, done = await backend.submit(specs("kill", 2))
    await backend.kill(job_id)
    await pilot_move(diracx_service, [done], "Checking", "Waiting", "Matched", "Running", "Completing", "Done")
    with pytest.raises(BackendError, match="left the job as it was"):
        await backend.kill(done)  # DiracX ignores an illegal move: the backend says so
    result = await backend.poll([job_id, "999999", "not-a-job"])
    assert [(r.backend_id, r.status) for r in result.reports] == [(job_id, JobStatus.KILLED)]
    assert sorted((r.backend_id, r.category) for r in result.rejections) == [
        ("999999", "unknown_job"),
        ("not-a-job", "unknown_job"),
    ]


async def test_an_expired_token_is_refreshed_and_written_back(diracx_service: DiracxService, tmp_path: Path) -> None:
    # The credentials file as `dirac login` writes it, with an access token that has expired.
    source = user_tokens(diracx_service.env)
    seed = DiracxClient(diracx_service.url, source)
    try:
        tokens = await source.load(seed._http)
    finally:
        await seed.close()
    credentials = tmp_path / "credentials.json"
    credentials.write_text(
        json.dumps(
            {
                "access_token": tokens.access_token,
                "refresh_token": tokens.refresh_token,
                "expires_on": int(time.time()) - 5,
            }
        )
    )
    backend = DiracxBackend.from_login(diracx_service.url, credentials=credentials)
    try:
        ids = await backend.submit(specs("expired", 2))
        assert backend.client.stats.token_refreshes == 1
        written = json.loads(credentials.read_text())
        assert written["access_token"] != tokens.access_token
        assert written["refresh_token"]  # kept for the user's own `dirac` commands (DiracX may rotate it)
        assert written["expires_on"] > time.time() + 60
        # A token the service refuses (401) although it claims to be good for long: renewed too.
        credentials.write_text(
            json.dumps({**written, "access_token": "not-a-token", "expires_on": int(time.time()) + 3600})
        )
        second = DiracxBackend.from_login(diracx_service.url, credentials=credentials)
        try:
            result = await second.poll(ids)
            assert len(result.reports) == 2
            assert second.client.stats.token_refreshes == 1
            assert second.client.stats.by_kind["search-full"] == 2  # the 401, then the answer
        finally:
            await second.close()
    finally:
        await backend.close()


async def test_outputs_come_from_the_presigned_url_once(diracx_service: DiracxService, tmp_path: Path) -> None:
    backend = diracx_service.backend()
    plans = {"out-0": JobPlan(0.5, "done"), "out-1": JobPlan(0.5, "failed"), "out-2": JobPlan(0.5, "stalled")}
    fleet = diracx_service.fleet(
        PilotConfig(scan_interval=0.3, stall_after=0.5, stalled_fail_after=0.3),
        plan=lambda _, name: plans.get(name, JobPlan(0.5)),
    )
    try:
        ids = await backend.submit(specs("out", 3))
        async with fleet:
            result = await poll_until_final(backend, ids)
        assert [r.status for r in result.reports] == [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.FAILED]
        assert result.reports[2].info == "Failed: Job stalled: pilot not running"
        for job_id in ids[:2]:
            (tmp_path / job_id).mkdir()
            fetched = await backend.fetch_output(job_id, tmp_path / job_id)
            assert fetched.files == ("std.err", "std.out")
            assert (tmp_path / job_id / "std.out").read_text().startswith(f"job {job_id} ran for")
        assert "exited with status 1" in (tmp_path / ids[1] / "std.err").read_text()
        with pytest.raises(OutputUnavailable):
            await backend.fetch_output(ids[2], tmp_path)  # a stalled job leaves no sandbox
        assert backend.downloads == Counter({ids[0]: 1, ids[1]: 1})
        # The downloads went to the storage, not the service: one listing and one URL per job.
        assert backend.client.stats.by_kind["sandbox-url"] == 2
    finally:
        await fleet.close()
        await backend.close()


def _quick_pilots(diracx_service: DiracxService) -> tuple[DiracxBackend, PilotFleet]:
    """A backend, and pilots that look every 0.3 s and run each job 0.5 s to Done."""
    fleet = diracx_service.fleet(PilotConfig(scan_interval=0.3), plan=lambda _, name: JobPlan(0.5, "done"))
    return diracx_service.backend(), fleet


async def _three_jobs_run_from_matches_confirmed_late(backend: DiracxBackend, fleet: PilotFleet, name: str) -> None:
    """Three jobs end Done, each run from a match the pilots learnt of only by reading it back."""
    try:
        ids = await backend.submit(specs(name, 3))
        async with fleet:
            result = await poll_until_final(backend, ids)
        assert [r.status for r in result.reports] == [JobStatus.COMPLETED] * 3
        assert fleet.counters.confirmed_late == 3
    finally:
        await fleet.close()
        await backend.close()


async def test_a_match_the_service_took_before_its_answer_was_lost_still_runs(diracx_service: DiracxService) -> None:
    backend, fleet = _quick_pilots(diracx_service)
    sent = fleet.pilot.json
    lost: list[str] = []

    async def answer_lost_once(method: str, path: str, **options: Any) -> Any:
        # The service applies the match, then a restart cuts the connection before the answer.
        answer = await sent(method, path, **options)
        body = json.dumps(options.get("json_body"))
        if not lost and path == "/api/jobs/status" and '"Matched"' in body:
            lost.append(body)
            raise BackendError("connection reset after the request was sent")
        return answer

    fleet.pilot.json = answer_lost_once  # type: ignore[method-assign]
    await _three_jobs_run_from_matches_confirmed_late(backend, fleet, "lost")
    assert lost


async def test_a_match_the_service_applies_after_the_pilot_gave_up_on_it_still_runs(
    diracx_service: DiracxService,
) -> None:
    backend, fleet = _quick_pilots(diracx_service)
    sent, searched = fleet.pilot.json, fleet.agent.json
    held: list[tuple[str, str, dict[str, Any]]] = []
    landed: list[str] = []

    async def give_up_before_the_service_applies(method: str, path: str, **options: Any) -> Any:
        # The pilot's request times out while the service still holds it ...
        if not held and path == "/api/jobs/status" and '"Matched"' in json.dumps(options.get("json_body")):
            held.append((method, path, options))
            raise BackendError("timed out")
        return await sent(method, path, **options)

    async def apply_after_the_next_confirmation(method: str, path: str, **options: Any) -> Any:
        answer = await searched(method, path, **options)
        # ... and applies it just after the pilot's next look found the jobs still Waiting.
        condition = (options.get("json_body") or {}).get("search", [{}])[0]
        if held and not landed and condition.get("parameter") == "JobID":
            late_method, late_path, late_options = held[0]
            await sent(late_method, late_path, **late_options)
            landed.append(late_path)
        return answer

    fleet.pilot.json = give_up_before_the_service_applies  # type: ignore[method-assign]
    fleet.agent.json = apply_after_the_next_confirmation  # type: ignore[method-assign]
    await _three_jobs_run_from_matches_confirmed_late(backend, fleet, "late")
    assert landed


def test_sandboxes_unpack_from_bz2_and_zst_and_refuse_the_rest(tmp_path: Path) -> None:
    bz2 = make_sandbox({"std.out": b"from bz2\n"})
    assert unpack_sandbox(bz2, tmp_path) == ["std.out"]
    assert (tmp_path / "std.out").read_text() == "from bz2\n"

    def zst(files: dict[str, bytes]) -> bytes:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as archive:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        return zstandard.ZstdCompressor().compress(raw.getvalue())

    (tmp_path / "z").mkdir()
    assert unpack_sandbox(zst({"result.txt": b"from zst\n"}), tmp_path / "z") == ["result.txt"]
    assert (tmp_path / "z" / "result.txt").read_text() == "from zst\n"
    with pytest.raises(MalformedAnswer, match="damaged sandbox"):
        unpack_sandbox(zst({"../escape": b"no"}), tmp_path / "z")  # a member that climbs out is refused
    assert not (tmp_path / "escape").exists()
    with pytest.raises(MalformedAnswer, match="neither"):
        unpack_sandbox(b"PK\x03\x04 a zip", tmp_path)


async def test_a_storage_that_takes_no_connection_is_unreachable_and_one_that_drops_it_is_not() -> None:
    """Refused: the service's fault, which a job's fetch waits out. Dropped mid-call: the call's."""
    client = DiracxClient("http://127.0.0.1:1", CredentialsFile(Path("/nonexistent")), timeout=5.0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    async def drop(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    dropping = await asyncio.start_server(drop, "127.0.0.1", 0)
    dropping_port = dropping.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ServiceUnreachable, match="sandbox-get: ConnectError"):
            await client.download(f"http://127.0.0.1:{closed_port}/sandbox", kind="sandbox-get")
        with pytest.raises(BackendError) as dropped:
            await client.download(f"http://127.0.0.1:{dropping_port}/sandbox", kind="sandbox-get")
        assert not isinstance(dropped.value, ServiceUnreachable)
    finally:
        dropping.close()
        await dropping.wait_closed()
        await client.close()
