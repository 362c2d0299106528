"""From a run's raw record to figures, a table, a JSON document and a plot."""

from __future__ import annotations

import json
import math
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

from monitor_core import loop_lag_quantile

from .keys import CYCLE
from .phases import PHASES, Phases, infer_phases
from .processes import classify
from .profile import Window, top_functions
from .run import RunRecord
from .session_feed import read_feed

__all__ = ["KEY_TARGETS", "figures", "plot", "table"]

KEY_TARGETS = ((10_000, 0.050), (100_000, 0.100))
"""Key-to-screen p95 targets: up to this many jobs, seconds."""
RSS_TARGET_PER_JOB = 2048
LOOP_LAG_TARGET = 0.010
"""Seconds: the session's loop lag p99 in every phase (issue 13); met when 99 in 100 wake-ups are within its bin."""
_SERIES_POINTS = 1500


def key_target(jobs: int) -> float:
    for limit, seconds in KEY_TARGETS:
        if jobs <= limit:
            return seconds
    return KEY_TARGETS[-1][1]


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile; ``None`` of nothing."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": percentile(values, 0.50),
        "p95": percentile(values, 0.95),
        "p99": percentile(values, 0.99),
        "max": max(values) if values else None,
    }


def _thin(points: list[Any], limit: int = _SERIES_POINTS) -> list[Any]:
    if len(points) <= limit:
        return points
    step = len(points) / limit
    return [points[int(i * step)] for i in range(limit)]


def _key_figures(record: RunRecord, phases: Phases) -> dict[str, Any]:
    by_key: dict[str, list[float]] = defaultdict(list)
    by_phase: dict[str, list[float]] = defaultdict(list)
    timeouts: dict[str, int] = defaultdict(int)
    vacuous = 0
    every: list[float] = []
    for press in record.keys:
        if press["vacuous"]:
            vacuous += 1
            continue
        if press["timed_out"]:
            timeouts[press["key"]] += 1
            continue
        by_key[press["key"]].append(press["seconds"])
        by_phase[phases.at(press["t"])].append(press["seconds"])
        every.append(press["seconds"])
    rows = {}
    for step in CYCLE:
        if step.timed:
            rows[step.name] = {**_spread(by_key.get(step.name, [])), "timeouts": timeouts.get(step.name, 0)}
    rows["all keys"] = {**_spread(every), "timeouts": sum(timeouts.values())}
    return {
        "by_key": rows,
        "by_phase": {name: _spread(by_phase[name]) for name in PHASES if by_phase.get(name)},
        "vacuous": vacuous,
        "target_p95": key_target(record.jobs),
    }


def _process_figures(
    record: RunRecord, first_role: dict[int, str]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    path = Path(record.processes_path)
    commands: dict[int, list[str]] = {}
    seen: set[int] = set()
    series: dict[str, list[tuple[float, float, float, int]]] = defaultdict(list)
    peak_single: dict[str, int] = defaultdict(int)
    pids_by_role: dict[str, set[int]] = defaultdict(set)
    system: list[tuple[float, float, float]] = []
    ours_cpu: list[float] = []
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        try:
            tick = json.loads(line)
        except ValueError:
            continue
        for pid, command in tick["new"].items():
            commands[int(pid)] = command
        cpu_by_role: dict[str, float] = defaultdict(float)
        rss_by_role: dict[str, int] = defaultdict(int)
        count_by_role: dict[str, int] = defaultdict(int)
        for pid, _ppid, cpu, rss in tick["p"]:
            role = first_role.get(pid) or classify(
                commands.get(pid, []),
                pid=pid,
                tui_pid=record.tui_pid,
                session_pid=record.session_pid,
                viewer_pid=record.viewer_pid,
                tui_command=commands.get(record.tui_pid or -1),
                session_command=commands.get(record.session_pid or -1),
            )
            first_role.setdefault(pid, role)
            if pid in seen:
                cpu_by_role[role] += cpu
            seen.add(pid)
            rss_by_role[role] += rss
            count_by_role[role] += 1
            pids_by_role[role].add(pid)
            peak_single[role] = max(peak_single[role], rss)
        for role in rss_by_role:
            series[role].append((tick["t"], cpu_by_role[role], rss_by_role[role], count_by_role[role]))
        system.append((tick["t"], tick["cpu_total"], tick["load1"]))
        ours_cpu.append(sum(cpu_by_role.values()))
    roles = {}
    for role, points in sorted(series.items()):
        cpus = [cpu for _, cpu, _, _ in points[1:]]
        peak_rss = max(rss for _, _, rss, _ in points)
        roles[role] = {
            "processes": len(pids_by_role[role]),
            "cpu_mean": sum(cpus) / len(cpus) if cpus else None,
            "cpu_p95": percentile(cpus, 0.95),
            "cpu_max": max(cpus) if cpus else None,
            "rss_peak": peak_rss,
            "rss_peak_one": peak_single[role],
            "rss_per_job": peak_rss / record.jobs if record.jobs else None,
        }
    cores = max(1, _cores())
    system_cpu = [cpu for _, cpu, _ in system[1:]]
    others = [max(0.0, total * cores - ours) for (_, total, _), ours in zip(system[1:], ours_cpu[1:], strict=False)]
    conditions = {
        "cores": cores,
        "system_cpu_mean": sum(system_cpu) / len(system_cpu) if system_cpu else None,
        "other_jobs_cpu_mean": sum(others) / len(others) if others else None,
        "load1_max": max((load for _, _, load in system), default=None),
    }
    thin = {role: _thin(points) for role, points in series.items()}
    return roles, {"processes": thin, "system": _thin(system)}, conditions


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def _lag_figures(record: RunRecord, phases: Phases) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Per backend status and results lag: from the session's feed if there is one, else the screen."""
    series: dict[str, list[tuple[float, float, float | None]]] = {}
    extra: dict[str, Any] = {"source": "screen (the backends panel, as displayed)"}
    targets: dict[str, float | None] = {}
    if record.feed_path and Path(record.feed_path).exists() and Path(record.feed_path).stat().st_size:
        feed = read_feed(Path(record.feed_path))
        extra = {
            "source": "session (LagSampled through a headless JSON viewer)",
            "events": feed.events,
            "rejections": dict(feed.rejections),
            "outcomes": dict(feed.outcomes),
            "faults": feed.faults,
            "ended": feed.ended,
            "counts": feed.counts,
            "loop_lag": _loop_lag_figures(feed.loop_lag, phases),
        }
        for name, samples in feed.lag.items():
            series[name] = [(at, lag, results) for at, lag, results in samples]
            last = feed.backend_last[name]
            latencies = feed.latencies.get(name, [])
            call = percentile(latencies, 0.5) or 0.0
            targets[name] = float(last.get("poll_interval") or 0.0) + call if last.get("poll_interval") else None
            extra.setdefault("backend_info", {})[name] = {
                "poll_interval": last.get("poll_interval"),
                "call_p50": call,
                "calls_total": last.get("calls_total"),
                "retries_total": last.get("retries_total"),
                "rejections_total": last.get("rejections_total"),
            }
    else:
        for sample in record.screen:
            for name, lag in sample["lag"].items():
                series.setdefault(name, []).append((sample["t"], lag, None))
    backends = {}
    for name, points in series.items():
        lags = [lag for _, lag, _ in points]
        results = [value for _, _, value in points if value is not None]
        by_phase: dict[str, list[float]] = defaultdict(list)
        for at, lag, _ in points:
            by_phase[phases.at(at)].append(lag)
        target = targets.get(name)
        p99 = percentile(lags, 0.99)
        backends[name] = {
            "status": _spread(lags),
            "results": _spread(results) if results else None,
            "p99_by_phase": {phase: percentile(values, 0.99) for phase, values in by_phase.items()},
            "target": target,
            "meets": None if target is None or p99 is None else p99 <= target,
        }
    thin = {name: _thin(points) for name, points in series.items()}
    return backends, thin, extra


def _loop_lag_figures(samples: list[tuple[float, float, tuple[int, ...]]], phases: Phases) -> dict[str, Any] | None:
    """The session's loop lag: quantiles of every wake-up of its probe, overall and per phase; ``None`` unmeasured.

    Quantiles are bin bounds (the heartbeats count wake-ups per bin of lateness): "p99 5 ms"
    reads "99 in 100 wake-ups came at most 5 ms late". ``worst`` is the longest single delay.
    """
    if not samples:
        return None
    width = max(len(bins) for _, _, bins in samples)
    overall = [0] * width
    by_phase: dict[str, list[int]] = defaultdict(lambda: [0] * width)
    worst_by_phase: dict[str, float] = defaultdict(float)
    for at, worst, bins in samples:
        phase = phases.at(at)
        for index, count in enumerate(bins):
            overall[index] += count
            by_phase[phase][index] += count
        worst_by_phase[phase] = max(worst_by_phase[phase], worst)
    p99_by_phase = {phase: loop_lag_quantile(bins, 0.99) for phase, bins in by_phase.items()}
    return {
        "wakeups": sum(overall),
        "p50": loop_lag_quantile(overall, 0.50),
        "p99": loop_lag_quantile(overall, 0.99),
        "max": max(worst for _, worst, _ in samples),
        "p99_by_phase": p99_by_phase,
        "worst_by_phase": dict(worst_by_phase),
        "target": LOOP_LAG_TARGET,
        "meets": all(p99 is not None and p99 <= LOOP_LAG_TARGET for p99 in p99_by_phase.values()),
    }


def _profile_figures(record: RunRecord, phases: Phases) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in record.profile_windows.items():
        windows = [Window(started, ended, Path(), samples, stacks) for started, ended, samples, stacks in raw]
        per_phase: dict[str, list[Window]] = defaultdict(list)
        for window in windows:
            per_phase[phases.at((window.started + window.ended) / 2)].append(window)
        out[name] = {"whole run": top_functions(windows)}
        for phase in PHASES:
            if per_phase.get(phase):
                out[name][phase] = top_functions(per_phase[phase])
    return out


def figures(record: RunRecord) -> dict[str, Any]:
    """Every figure of one run, and the series its plot needs."""
    lag_backends, lag_series, lag_extra = _lag_figures(record, Phases(()))
    counts = lag_extra.get("counts") or [
        (sample["t"], sample["counts"]) for sample in record.screen if sample.get("counts") is not None
    ]
    phases = infer_phases(counts, record.jobs)
    if phases.spans:
        lag_backends, lag_series, lag_extra = _lag_figures(record, phases)
    lag_extra.pop("counts", None)
    roles, process_series, conditions = _process_figures(record, {})
    warnings = [sample["warnings"] for sample in record.screen]
    rejected = [sample["rejected"] for sample in record.screen]
    behind = [sample["behind"] for sample in record.screen if sample.get("behind") is not None]
    start = record.started
    return {
        "jobs": record.jobs,
        "command": " ".join(record.command),
        "design": "session in its own process" if record.socket not in (None, "none") else "session inside the TUI",
        "socket": record.socket,
        "started": start,
        "first_table_s": record.first_table,
        "all_final_s": None if record.all_final_at is None else record.all_final_at - start,
        "stopped": record.stopped,
        "exit_status": record.exit_status,
        "quit_s": record.quit_seconds,
        "leftovers": record.leftovers,
        "recoveries": record.recoveries,
        "missed_screens": record.missed_screens,
        "last_screen": record.last_screen,
        "keys": _key_figures(record, phases),
        "lag": {"backends": lag_backends, **lag_extra},
        "processes": roles,
        "conditions": conditions,
        "warnings": {"max": max(warnings, default=0), "last": warnings[-1] if warnings else 0},
        "rejected_on_screen": {"max": max(rejected, default=0), "last": rejected[-1] if rejected else 0},
        "behind_max": max(behind, default=None),
        "phases": [list(span) for span in phases.spans],
        "phase_seconds": phases.durations(),
        "profile": _profile_figures(record, phases),
        "viewer_stderr": record.viewer_stderr[-600:],
        "series": {
            "keys": [(press["t"], press["key"], press["seconds"], press["timed_out"]) for press in record.keys],
            "lag": lag_series,
            "screen": _thin([(s["t"], s["final"], s["warnings"], s["rejected"]) for s in record.screen]),
            **process_series,
        },
    }


# -- text ---------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def table(runs: list[dict[str, Any]], label: str) -> str:
    """The markdown tables of a set of runs."""
    out = [f"Conditions: {label}", ""]
    out += [
        "| jobs | design | stopped | first table s | all final s | final at stop | quit s | phases (s) "
        "| warnings max | rejected | leftovers |"
    ]
    out += ["|---:|---|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for run in runs:
        phases = ", ".join(f"{name} {seconds:.0f}" for name, seconds in run["phase_seconds"].items())
        rejected = sum((run["lag"].get("rejections") or {}).values()) if "rejections" in run["lag"] else None
        shown = run["rejected_on_screen"]["max"]
        out.append(
            f"| {run['jobs']:,} | {run['design']} | {run['stopped']} | {_s(run['first_table_s'])} | "
            f"{_s(run['all_final_s'])} | {_final_at_stop(run)} | {_s(run['quit_s'])} | {phases} | "
            f"{run['warnings']['max']} | "
            f"{shown if rejected is None else f'{rejected} (screen {shown})'} | {len(run['leftovers'])} |"
        )
    out += ["", "Key to screen, ms (send-keys until the pane shows the result; pane polled every 5 ms):", ""]
    out += ["| jobs | key | n | p50 | p95 | max | timeouts | target p95 | meets |"]
    out += ["|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for run in runs:
        target = run["keys"]["target_p95"]
        for key, row in run["keys"]["by_key"].items():
            meets = "-" if row["p95"] is None else ("yes" if row["p95"] < target and not row["timeouts"] else "no")
            out.append(
                f"| {run['jobs']:,} | {key} | {row['n']} | {_ms(row['p50'])} | {_ms(row['p95'])} | "
                f"{_ms(row['max'])} | {row['timeouts']} | {_ms(target)} | {meets if key == 'all keys' else ''} |"
            )
    out += ["", "Key to screen p95 by phase, ms:", ""]
    out += ["| jobs | " + " | ".join(PHASES) + " |", "|---:|" + "---:|" * len(PHASES)]
    for run in runs:
        cells = [
            f"{_ms(run['keys']['by_phase'][name]['p95'])} (n={run['keys']['by_phase'][name]['n']})"
            if name in run["keys"]["by_phase"]
            else "-"
            for name in PHASES
        ]
        out.append(f"| {run['jobs']:,} | " + " | ".join(cells) + " |")
    out += ["", "Lag per backend, s:", ""]
    out += [
        "| jobs | backend | source | status p50 | status p99 | status max | target (interval + call) | meets | "
        "results p99 | results max | worst phase p99 |"
    ]
    out += ["|---:|---|---|---:|---:|---:|---:|---|---:|---:|---|"]
    for run in runs:
        source = "session" if run["lag"]["source"].startswith("session") else "screen"
        for name, row in run["lag"]["backends"].items():
            status, results = row["status"], row["results"] or {}
            worst = max(row["p99_by_phase"].items(), key=lambda item: item[1] or 0.0, default=("-", None))
            meets = "-" if row["meets"] is None else ("yes" if row["meets"] else "no")
            out.append(
                f"| {run['jobs']:,} | {name} | {source} | {_s(status['p50'])} | {_s(status['p99'])} | "
                f"{_s(status['max'])} | {_s(row['target'])} | {meets} | {_s(results.get('p99'))} | "
                f"{_s(results.get('max'))} | {worst[0]} {_s(worst[1])} |"
            )
    loops = [(run["jobs"], run["lag"].get("loop_lag")) for run in runs if run["lag"].get("loop_lag")]
    if loops:
        out += [
            "",
            "Session loop lag, ms (how late its probe's wake-ups, due every 10 ms, came: quantiles as the bounds "
            "of the heartbeats' bins, max the longest single delay):",
            "",
        ]
        phase_columns = " | ".join(f"{name} p99" for name in PHASES)
        out += [f"| jobs | p50 | p99 | max | {phase_columns} | target p99 | meets |"]
        out += ["|---:|---:|---:|---:|" + "---:|" * len(PHASES) + "---:|---|"]
        for jobs, loop in loops:
            by_phase = loop["p99_by_phase"]
            cells = [_ms(by_phase.get(name)) for name in PHASES]
            out.append(
                f"| {jobs:,} | {_ms(loop['p50'])} | {_ms(loop['p99'])} | {_ms(loop['max'])} | "
                + " | ".join(cells)
                + f" | {_ms(loop['target'])} | {'yes' if loop['meets'] else 'no'} |"
            )
    out += ["", "Processes (CPU % of one core, sampled each second; RSS peak of the role's processes together):", ""]
    out += ["| jobs | process | count | CPU mean | CPU p95 | CPU max | RSS peak MB | RSS per job | target |"]
    out += ["|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for run in runs:
        for role, row in run["processes"].items():
            per_job = row["rss_per_job"]
            target = (
                ("yes" if per_job < RSS_TARGET_PER_JOB else "no") + " (< 2 KiB)"
                if role in ("session", "json viewer", "tui") and per_job is not None
                else ""
            )
            out.append(
                f"| {run['jobs']:,} | {role} | {row['processes']} | {_pct(row['cpu_mean'])} | {_pct(row['cpu_p95'])} | "
                f"{_pct(row['cpu_max'])} | {_mb(row['rss_peak'])} | "
                f"{'-' if per_job is None else f'{per_job / 1024:.1f} KiB'} | {target} |"
            )
    for run in runs:
        conditions = run["conditions"]
        out.append(
            f"\n{run['jobs']:,} jobs: machine {conditions['cores']} cores, CPU used by everything else "
            f"(other jobs) {_pct(conditions['other_jobs_cpu_mean'])}% of a core on average, load1 max "
            f"{conditions['load1_max'] or 0:.1f}; lag source: {run['lag']['source']}."
        )
    return "\n".join(out)


def _final_at_stop(run: dict[str, Any]) -> str:
    finals = [point[1] for point in run["series"]["screen"] if point[1] is not None]
    return f"{finals[-1]:,}" if finals else "-"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def profile_table(runs: list[dict[str, Any]], limit: int = 10) -> str:
    """The top functions per process and phase, as markdown."""
    out = []
    for run in runs:
        for process, phases in run.get("profile", {}).items():
            for phase, top in phases.items():
                if not isinstance(top, dict) or not top.get("samples"):
                    continue
                out.append(
                    f"\n{run['jobs']:,} jobs, {process}, {phase}: {top['samples']} samples in {top['seconds']} s"
                    f" (busy {top.get('busy')}):\n"
                )
                out.append("| project code (with what it calls) | % | function itself | % | on the stack | % |")
                out.append("|---|---:|---|---:|---|---:|")
                columns = [top.get("project", []), top["own"], top["total"]]
                for index in range(limit):
                    cells = []
                    for column in columns:
                        name, share = column[index] if index < len(column) else ("", None)
                        cells += [str(name), "" if share is None else f"{share * 100:.1f}"]
                    out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


# -- plot ---------------------------------------------------------------------------------------

_PHASE_COLOURS = {
    "submission": "#dbe9f6",
    "fetch flood": "#fde2c8",
    "completion burst": "#f6d5e5",
    "steady": "#ffffff",
    "drained": "#e5f5e0",
}


def plot(runs: list[dict[str, Any]], path: Path, label: str) -> None:
    """Per run (a column): key-to-screen times, status lag, CPU and RSS per process, over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    columns = len(runs)
    figure, axes = plt.subplots(4, columns, figsize=(7.5 * columns, 13), squeeze=False, sharex="col")
    for column, run in enumerate(runs):
        start = run["started"]
        keys_axis, lag_axis, cpu_axis, rss_axis = (axes[row][column] for row in range(4))
        for axis in (keys_axis, lag_axis, cpu_axis, rss_axis):
            for begin, end, name in run["phases"]:
                axis.axvspan(begin - start, end - start, color=_PHASE_COLOURS.get(name, "#eeeeee"), lw=0)
        by_key: dict[str, list[tuple[float, float]]] = defaultdict(list)
        lost: list[float] = []
        for at, key, seconds, timed_out in run["series"]["keys"]:
            if timed_out:
                lost.append(at - start)
            elif seconds is not None:
                by_key[key].append((at - start, seconds * 1000))
        for key, points in by_key.items():
            keys_axis.scatter([p[0] for p in points], [p[1] for p in points], s=10, label=key)
        if lost:
            keys_axis.scatter(lost, [15_000] * len(lost), marker="x", color="red", label="timed out")
        keys_axis.axhline(run["keys"]["target_p95"] * 1000, color="black", ls="--", lw=0.8, label="p95 target")
        keys_axis.set_yscale("log")
        keys_axis.set_ylabel("key to screen, ms")
        keys_axis.set_title(f"{run['jobs']:,} jobs ({run['design']})")
        keys_axis.legend(fontsize=7, ncol=2, loc="upper right")
        for name, points in run["series"]["lag"].items():
            lag_axis.plot([p[0] - start for p in points], [p[1] for p in points], lw=0.9, label=f"{name} status")
            results = [(p[0] - start, p[2]) for p in points if p[2] is not None]
            if results and any(value for _, value in results):
                lag_axis.plot([p[0] for p in results], [p[1] for p in results], lw=0.7, ls=":", label=f"{name} results")
            target = run["lag"]["backends"].get(name, {}).get("target")
            if target:
                lag_axis.axhline(target, lw=0.6, ls="--", color=lag_axis.lines[-1].get_color())
        lag_axis.set_ylabel(f"lag, s ({'session' if run['lag']['source'].startswith('session') else 'screen'})")
        lag_axis.legend(fontsize=7, loc="upper right")
        for role, points in sorted(run["series"]["processes"].items()):
            times = [p[0] - start for p in points]
            cpu_axis.plot(times, [p[1] for p in points], lw=0.9, label=role)
            rss_axis.plot(times, [p[2] / 2**20 for p in points], lw=0.9, label=role)
        cpu_axis.set_ylabel("CPU, % of a core")
        cpu_axis.legend(fontsize=7, loc="upper right")
        rss_axis.set_ylabel("RSS, MB")
        rss_axis.set_xlabel("seconds since launch (shading: phase)")
        rss_axis.legend(fontsize=7, loc="upper left")
    handles = [Rectangle((0, 0), 1, 1, color=colour) for colour in _PHASE_COLOURS.values()]
    figure.legend(handles, list(_PHASE_COLOURS), loc="lower center", ncol=len(_PHASE_COLOURS), fontsize=8)
    title = textwrap.fill(f"ganga-monitor-tui --demo, live through tmux 200x50 — {label}", width=60 * columns + 40)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout(rect=(0, 0.03, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
