"""Full against delta status polls on a real DiracX 0.7 service: 10,000 jobs, 1 % changing per interval.

``python -m benchmarks.diracx [--jobs 10000] [--interval 5] [--sweeps 20] [--change 0.01] [--full-every 20]``

Starts its own service with ``scripts/diracx-local`` (in ``/tmp/gm-diracx-bench``, stopped
afterwards), submits the jobs, then runs two phases of ``--sweeps`` sweeps each, one per
interval: every job asked with full reads (``JobID in [...]``, the 10,000 ids in one call),
then with delta reads (``LastUpdateTime gt``; every ``--full-every``-th sweep reads in full).
Meanwhile a pilot identity moves 1 % of the jobs a step along DIRAC's state machine each
interval, at random moments. Sweeps and changes take turns (a lock), so the service's CPU
time measured over a sweep (``/proc/PID/stat`` of the DiracX process) is that sweep's alone.

Per phase it prints calls, bytes (HTTP bodies and paths, both ways) and server CPU per
sweep, and the detection lag of the changes (change made -> first sweep that showed it).
Writes ``screenshots/diracx-polls.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from monitor_core import JobSpec
from monitor_core.backends.diracx import DEFAULT_CAPABILITIES, DiracxBackend, pilot_tokens, read_env_file
from monitor_core.backends.diracx_http import DiracxClient

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "diracx-local"
STATE_DIR = Path("/tmp/gm-diracx-bench")
PLOT = ROOT / "screenshots" / "diracx-polls.png"
CYCLE = {
    "Received": "Checking",
    "Checking": "Waiting",
    "Waiting": "Matched",
    "Matched": "Running",
    "Running": "Stalled",
    "Stalled": "Running",
}
"""The step each change makes: legal in DIRAC's state machine, and never final, so every job
stays to be polled."""
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Sweep:
    calls: int
    bytes: int
    cpu: float
    seconds: float
    full: bool


@dataclass
class Phase:
    name: str
    sweeps: list[Sweep] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    missed: int = 0


def server_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        env={**os.environ, "DIRACX_LOCAL_DIR": str(STATE_DIR)},
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Changer:
    """Moves a share of the jobs one step each interval, as pilots would, and remembers when."""

    def __init__(self, client: DiracxClient, ids: list[str], share: float, seed: int) -> None:
        self.client, self.ids = client, ids
        self.per_interval = max(1, round(len(ids) * share))
        self.rng = random.Random(seed)
        self.status = dict.fromkeys(ids, "Received")
        self.pending: dict[str, float] = {}
        """Job -> when its first change not yet seen by the monitor was made."""

    async def run(self, interval: float, turn: asyncio.Lock, stop: asyncio.Event) -> None:
        batches = 5
        while not stop.is_set():
            started = time.monotonic()
            moments = sorted(self.rng.uniform(0, interval) for _ in range(batches))
            chosen = self.rng.sample(self.ids, self.per_interval)
            for index, moment in enumerate(moments):
                await asyncio.sleep(max(0.0, started + moment - time.monotonic()))
                if stop.is_set():
                    return
                batch = chosen[index::batches]
                async with turn:
                    await self.change(batch)
            await asyncio.sleep(max(0.0, started + interval - time.monotonic()))

    async def change(self, batch: list[str]) -> None:
        now = datetime.now(UTC).isoformat()
        body = {}
        for job_id in batch:
            new = CYCLE[self.status[job_id]]
            body[job_id] = {now: {"Status": new, "MinorStatus": "benchmark", "Source": "JobWrapper"}}
        await self.client.json("PATCH", "/api/jobs/status", kind="change", json_body=body)
        made = time.time()
        for job_id in batch:
            self.status[job_id] = CYCLE[self.status[job_id]]
            self.pending.setdefault(job_id, made)


async def run_phase(
    name: str, backend: DiracxBackend, changer: Changer, ids: list[str], args: argparse.Namespace, pid: int
) -> Phase:
    phase = Phase(name)
    turn, stop = asyncio.Lock(), asyncio.Event()
    changer.pending.clear()
    async with turn:
        await backend.poll(ids)  # the first read of a phase is a full one in either mode: not counted
    changing = asyncio.create_task(changer.run(args.interval, turn, stop))
    try:
        for _ in range(args.sweeps):
            due = time.monotonic() + args.interval
            async with turn:
                stats = backend.client.stats
                calls, sent, received = stats.calls, stats.bytes_sent, stats.bytes_received
                full_before = backend.counters.confirmed_full
                cpu, began = server_cpu(pid), time.monotonic()
                result = await backend.poll(ids)
                seconds, cpu = time.monotonic() - began, server_cpu(pid) - cpu
                seen = time.time()
                phase.sweeps.append(
                    Sweep(
                        stats.calls - calls,
                        stats.bytes_sent - sent + stats.bytes_received - received,
                        cpu,
                        seconds,
                        backend.counters.confirmed_full > full_before,
                    )
                )
                phase.missed += len(result.rejections)
                for report in result.reports:
                    made = changer.pending.get(report.backend_id)
                    if made is not None and report.info.split(":")[0] == changer.status[report.backend_id]:
                        phase.lags.append(seen - made)
                        del changer.pending[report.backend_id]
            await asyncio.sleep(max(0.0, due - time.monotonic()))
    finally:
        stop.set()
        await changing
    return phase


def table(phases: list[Phase], args: argparse.Namespace) -> str:
    lines = [
        f"DiracX 0.7.0 on loopback (SQLite), {args.jobs:,} jobs, {args.change:.0%} changing per {args.interval:g} s "
        f"interval, {args.sweeps} sweeps per mode; 2 cores shared with other jobs",
        "",
        f"{'mode':<28}{'calls/sweep':>12}{'KB/sweep':>11}{'server CPU ms/sweep':>21}{'sweep s':>9}"
        f"{'lag p50 s':>11}{'lag p99 s':>11}{'changes':>9}",
    ]
    rows: list[tuple[str, list[Sweep], list[float]]] = []
    for phase in phases:
        rows.append((phase.name, phase.sweeps, phase.lags))
        if phase.name.startswith("delta"):
            rows.append(("  of which delta sweeps", [s for s in phase.sweeps if not s.full], []))
            rows.append(("  of which full sweeps", [s for s in phase.sweeps if s.full], []))
    for label, sweeps, lags in rows:
        if not sweeps:
            continue
        lines.append(
            f"{label:<28}{statistics.mean(s.calls for s in sweeps):>12.1f}"
            f"{statistics.mean(s.bytes for s in sweeps) / 1024:>11.1f}"
            f"{statistics.mean(s.cpu for s in sweeps) * 1000:>21.0f}"
            f"{statistics.mean(s.seconds for s in sweeps):>9.2f}"
            + (f"{percentile(lags, 0.5):>11.2f}{percentile(lags, 0.99):>11.2f}{len(lags):>9}" if lags else "")
        )
    full, delta = phases[0], phases[1]
    per_sweep = statistics.mean(s.bytes for s in full.sweeps)
    only_delta = [s.bytes for s in delta.sweeps if not s.full]
    lines += [
        "",
        f"data per sweep, full / delta: {per_sweep / statistics.mean(only_delta):.1f}x for delta sweeps, "
        f"{per_sweep / statistics.mean(s.bytes for s in delta.sweeps):.1f}x including the full sweep every "
        f"{args.full_every} intervals",
        f"detection lag p99: full {percentile(full.lags, 0.99):.2f} s, delta {percentile(delta.lags, 0.99):.2f} s "
        f"(target <= interval + one call = {args.interval + statistics.mean(s.seconds for s in full.sweeps):.2f} s)",
        f"rejections: full {full.missed}, delta {delta.missed}",
    ]
    return "\n".join(lines)


def plot(phases: list[Phase], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for phase, colour in zip(phases, ("tab:red", "tab:blue"), strict=True):
        kilobytes = [s.bytes / 1024 for s in phase.sweeps]
        left.plot(range(1, len(kilobytes) + 1), kilobytes, "o-", color=colour, label=phase.name)
        lags = sorted(phase.lags)
        right.plot(lags, [(i + 1) / len(lags) for i in range(len(lags))], color=colour, label=phase.name)
    left.set(yscale="log", xlabel="sweep", ylabel="KB moved per sweep (log)", title="Data per sweep")
    right.axvline(args.interval, color="grey", linestyle=":", label="one interval")
    right.set(xlabel="detection lag, s", ylabel="share of changes seen", title="Detection lag")
    for axis in (left, right):
        axis.legend()
        axis.grid(alpha=0.3)
    fig.suptitle(
        f"DiracX 0.7: {args.jobs:,} jobs, {args.change:.0%} changing per {args.interval:g} s (2 cores shared)",
        fontsize=10,
    )
    fig.tight_layout()
    PLOT.parent.mkdir(exist_ok=True)
    fig.savefig(PLOT, dpi=110)


async def bench(args: argparse.Namespace) -> list[Phase]:
    env_file = STATE_DIR / "env"
    env = read_env_file(env_file)
    pid = int((STATE_DIR / "run" / "diracx.pid").read_text())
    caps = replace(DEFAULT_CAPABILITIES, call_timeout=120.0)
    submitter = DiracxBackend.from_env_file(env_file, capabilities=caps)
    started = time.monotonic()
    ids = await submitter.submit([JobSpec(f"bench-{i}", "diracx") for i in range(args.jobs)])
    print(f"submitted {len(ids):,} jobs in {time.monotonic() - started:.0f} s", file=sys.stderr)
    await submitter.close()
    changer_client = DiracxClient(env["DIRACX_URL"], pilot_tokens(env), timeout=120.0)
    changer = Changer(changer_client, ids, args.change, args.seed)
    phases = []
    try:
        for name, options in (
            ("full reads", {"delta": False}),
            (f"delta reads (full every {args.full_every})", {"full_every": args.full_every}),
        ):
            backend = DiracxBackend.from_env_file(env_file, capabilities=caps, margin=args.margin, **options)
            try:
                print(f"phase: {name}", file=sys.stderr)
                phases.append(await run_phase(name, backend, changer, ids, args, pid))
            finally:
                await backend.close()
    finally:
        await changer_client.close()
    return phases


async def tui_screenshot(jobs: int) -> Path:
    """The TUI on a demo session of the ``diracx`` backend (the local service and its pilots)."""
    import tempfile

    from benchmarks.tui_screenshots import to_png
    from ganga_tui.app import GangaMonitorApp
    from monitor_core import SessionConfig

    with tempfile.TemporaryDirectory() as tmp:
        config = SessionConfig(
            state_dir=Path(tmp) / "state", jobs=jobs, backends=("local", "diracx"), mean_duration=6.0, poll_interval=2.0
        )
        app = GangaMonitorApp(demo=config)
        async with app.run_test(size=(200, 50)) as pilot:
            for _ in range(12_000):
                if app.store.final >= jobs // 3:
                    break
                await pilot.pause(0.01)
            await pilot.pause(0.5)
            path = Path(app.save_screenshot(filename="tui-diracx.svg", path=str(PLOT.parent)))
            await app.action_quit()
    to_png(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.diracx", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--sweeps", type=int, default=20)
    parser.add_argument("--change", type=float, default=0.01, help="share of the jobs changing per interval")
    parser.add_argument(
        "--full-every", type=int, default=20, help="every N-th sweep reads in full (20 x 5 s: the backend's 10 x 10 s)"
    )
    parser.add_argument("--margin", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--keep", action="store_true", help="leave the service running afterwards")
    parser.add_argument(
        "--tui-screenshot",
        action="store_true",
        help="instead: screenshot the TUI on a demo session of the diracx backend (screenshots/tui-diracx.png)",
    )
    args = parser.parse_args(argv)
    if args.tui_screenshot:
        print(asyncio.run(tui_screenshot(1500)))
        return 0
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    up = script("up", "--fresh")
    if up.returncode != 0:
        print(f"scripts/diracx-local up failed: {up.stderr[-1500:]}", file=sys.stderr)
        return 1
    try:
        phases = asyncio.run(bench(args))
    finally:
        if not args.keep:
            script("down")
    print(table(phases, args))
    plot(phases, args)
    print(f"plot: {PLOT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
