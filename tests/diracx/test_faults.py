"""A proxy between the monitor and DiracX that spoils answers: malformed JSON, 500s, slow
answers, unknown statuses and statuses that go backwards. Each is refused and counted, the
monitoring goes on, and every job still ends as it really did.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import pytest

from monitor_core import EventBus, JobSpec, JobStatus, OpFinished, OutputSink, Scheduler
from monitor_core.backends.diracx import DEFAULT_CAPABILITIES, DiracxBackend, user_tokens
from monitor_core.backends.diracx_http import DiracxClient
from monitor_core.sim.diracx_pilots import JobPlan, PilotConfig

from ..conftest import until
from ..core.conftest import FAST
from .conftest import DiracxService

pytestmark = pytest.mark.diracx


@dataclass
class SpoilingProxy:
    """An HTTP/1.1 proxy that passes everything on, and spoils status searches as told."""

    upstream: str
    mode: str = "pass"
    spoiled: dict[str, int] = field(default_factory=dict)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with httpx.AsyncClient(base_url=self.upstream, timeout=60) as upstream:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    request_line, *header_lines = head.decode("latin-1").split("\r\n")
                    method, target, _ = request_line.split(" ", 2)
                    headers = dict(line.split(": ", 1) for line in header_lines if ": " in line)
                    length = int(headers.get("Content-Length") or headers.get("content-length") or 0)
                    body = await reader.readexactly(length) if length else b""
                    forwarded = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length")}
                    answer = await upstream.request(method, target, headers=forwarded, content=body)
                    status, content = answer.status_code, answer.content
                    if target.startswith("/api/jobs/search?page=") and self.mode != "pass":
                        status, content = await self.spoil(status, content)
                    out = [f"HTTP/1.1 {status} X", f"Content-Length: {len(content)}", "Content-Type: application/json"]
                    for name in ("content-range", "date"):
                        if name in answer.headers:
                            out.append(f"{name}: {answer.headers[name]}")
                    writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + content)
                    await writer.drain()
        writer.close()

    async def spoil(self, status: int, content: bytes) -> tuple[int, bytes]:
        mode = self.mode
        self.spoiled[mode] = self.spoiled.get(mode, 0) + 1
        if mode == "malformed":
            return 200, b'[{"JobID": 1, "Status": '
        if mode == "error":
            return 500, b'{"detail": "Internal Server Error"}'
        if mode == "slow":
            await asyncio.sleep(3.0)
            return status, content
        if mode == "unknown":
            return status, re.sub(rb'"Status":"(Waiting|Running)"', b'"Status":"Levitating"', content)
        if mode == "backwards":
            # Running -> Submitting: Ganga would let running -> submitted pass; DIRAC never does it.
            return status, content.replace(b'"Status":"Running"', b'"Status":"Submitting"')
        raise AssertionError(mode)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{self.port}"
        finally:
            server.close()


async def test_spoiled_answers_are_refused_and_counted_and_monitoring_goes_on(
    diracx_service: DiracxService, tmp_path: Path
) -> None:
    proxy = SpoilingProxy(diracx_service.url)
    plans = {f"fault-{i}": JobPlan(6.0 + i % 5, "failed" if i % 7 == 0 else "done") for i in range(40)}
    fleet = diracx_service.fleet(
        PilotConfig(scan_interval=0.5, heartbeat_interval=2.0), plan=lambda _, name: plans.get(name, JobPlan(1.0))
    )
    specs = [
        JobSpec(name, "diracx", expected=JobStatus.FAILED if plan.outcome == "failed" else JobStatus.COMPLETED)
        for name, plan in plans.items()
    ]
    bus = EventBus()
    subscription = bus.subscribe(name="test", max_pending=100_000)
    async with proxy.serving() as url, fleet:
        backend = DiracxBackend(
            DiracxClient(url, user_tokens(diracx_service.env)),
            capabilities=replace(DEFAULT_CAPABILITIES, poll_interval=0.5, call_timeout=2.0),
            margin=2.0,
            full_every=3,
        )
        async with Scheduler([backend], bus=bus, outputs=OutputSink(tmp_path / "out"), config=FAST) as scheduler:
            jobs = await scheduler.submit(specs)
            await until(lambda: all(j.status == JobStatus.RUNNING for j in jobs), within=60)
            counters = scheduler.counters
            for mode, counter in (
                ("unknown", "rejections.unknown_state"),
                ("backwards", "rejections.illegal_transition"),
                ("malformed", "rejections.garbage"),
            ):
                proxy.mode = mode
                await until(lambda c=counter: counters[c] > 0, within=30)
            for mode in ("error", "slow"):
                proxy.mode = mode
                seen = proxy.spoiled.get(mode, 0)
                await until(lambda m=mode, s=seen: proxy.spoiled.get(m, 0) >= s + 2, within=30)
            proxy.mode = "pass"
            async with asyncio.timeout(90):
                await scheduler.wait_all_final()
    events = []
    while (event := subscription.receive_nowait()) is not None:
        events.append(event)
    errors = [e.error or "" for e in events if isinstance(e, OpFinished) and e.outcome != "done"]
    assert any("HTTP 500" in e for e in errors)
    assert any("malformed answer" in e for e in errors)
    assert any(e.outcome == "timeout" for e in events if isinstance(e, OpFinished))
    # Refused, not believed: every job ended as it really did, with its output.
    assert [j.status for j in jobs] == [j.expected for j in jobs]
    assert all(j.job_id in scheduler.outputs_collected for j in jobs)
    assert set(backend.downloads) == {j.backend_id for j in jobs}
    assert set(backend.downloads.values()) == {1}
