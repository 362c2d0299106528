"""Tables, targets and plots from the runs' results."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .workloads import OURS

Result = dict[str, Any]


def _s(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _lag(detection: dict[str, Any], key: str) -> str:
    value = detection.get(key)
    if value is None:
        return "-"
    return f"{'>=' if detection.get('undetected') else ''}{value:.2f}"


GROUPS = (
    ("headline", "Headline: 25 jobs, one service, time to confirm them all once"),
    ("scale", "Equal intervals: every model polls every job on every lane at the same interval"),
    ("faults", "Faults from t = 0, equal intervals"),
    ("shipped", "As shipped: Ganga's models at Ganga's default rates (not a comparison row)"),
    ("activation", "Ganga 8.7's loop when every backend becomes active in the same scan"),
    ("real", "Ganga's real code: real jobs in a real Ganga 8.7.12 session (Local; Dirac on the simulated grid)"),
)


def _intervals(r: Result) -> str:
    values = r.get("intervals") or {}
    distinct = sorted(set(values.values()))
    if len(distinct) == 1:
        return f"{distinct[0]:g}"
    return "/".join(f"{values[lane]:g}" for lane in r["lanes"])


def _group(r: Result) -> str:
    if r.get("group"):
        return str(r["group"])
    return "headline" if r["workload"] == "headline" else "faults" if r.get("fault") else "scale"


def table(results: Sequence[Result], group: str | None = None) -> str:
    """A markdown table, one row per (workload, model); only ``group``'s rows when given."""
    header = (
        "| workload | model | interval s | jobs | setup s | sweep s | bound s | sweep/bound | lag p50 s | lag p99 s "
        "| results p99 s | not seen / not collected | loop p99 / max ms | CPU s | peak RSS MiB | B/job |"
    )
    lines = [header, "|" + "|".join(["---"] * 16) + "|"]
    for r in results:
        if group is not None and _group(r) != group:
            continue
        d = r["detection"]
        sweep = r["sweep_s"]
        ratio = None if sweep is None or not r["sweep_bound_s"] else sweep / r["sweep_bound_s"]
        measured = r.get("measured_s", r["window"])
        sweep_text = _s(sweep) if sweep is not None else f">{measured:.0f} ({r['swept']}/{r['jobs']})"
        if _group(r) == "real":
            sweep_text = "-"
        per_job = r["bytes_per_job"]
        results_p99 = d.get("results_p99")
        results_text = "-" if results_p99 is None else f"{'>=' if d.get('uncollected') else ''}{results_p99:.2f}"
        lines.append(
            f"| {r['workload']} | {r['model']} | {_intervals(r)} | {r['jobs']:,} "
            f"| {_s(r.get('start_s'))} + {_s(r.get('adopt_s'))} | {sweep_text} | {_s(r['sweep_bound_s'])} "
            f"| {_s(ratio)} | {_lag(d, 'p50')} | {_lag(d, 'p99')} | {results_text} "
            f"| {d['undetected']} / {d.get('uncollected', '-')} of {d['jobs']} "
            f"| {_s(r['loop_lag_p99_ms'], 1)} / {_s(r.get('loop_lag_max_ms'), 1)} "
            f"| {_s(r['cpu_s'], 1)} | {_s(r['peak_rss'] / 2**20 if r['peak_rss'] else None, 0)} "
            f"| {'-' if per_job is None or r['jobs'] < 1000 else f'{per_job:.0f}'} |"
        )
    return "\n".join(lines)


def fault_table(results: Sequence[Result]) -> str:
    """Healthy lanes' detection lag p99 with and without the fault."""
    by_key = {(r["workload"], r["model"]): r for r in results}
    lines = [
        "| fault | model | healthy lane | p99 without s | p99 with s | change | faulty lane p99 s "
        "| faulty lane results p99 s | loop p99 / max ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if not r.get("fault"):
            continue
        base = by_key.get((r["baseline"], r["model"]))
        faulty = r["fault"]["lane"]
        for lane, stats in r["detection"]["by_lane"].items():
            if lane == faulty:
                continue
            before = None if base is None else base["detection"]["by_lane"][lane]["p99"]
            after = stats["p99"]
            change = None if before in (None, 0) or after is None else after / before - 1
            lines.append(
                f"| {r['workload']} | {r['model']} | {lane} | {_s(before)} | {_s(after)} "
                f"| {'-' if change is None else f'{change:+.0%}'} | {_s(r['detection']['by_lane'][faulty]['p99'])} "
                f"| {_s(r['detection']['by_lane'][faulty].get('results_p99'))} "
                f"| {_s(r['loop_lag_p99_ms'], 1)} / {_s(r.get('loop_lag_max_ms'), 1)} |"
            )
    return "\n".join(lines)


def _find(results: Sequence[Result], workload: str, model: str) -> Result | None:
    return next((r for r in results if r["workload"] == workload and r["model"] == model), None)


def targets(results: Sequence[Result]) -> list[tuple[str, bool | None, str]]:
    """Each target: (description, met? — None when not measured, detail)."""
    out: list[tuple[str, bool | None, str]] = []
    for model in OURS:
        r = _find(results, "headline", model)
        if r is None:
            continue
        limit = 1.1 * r["call_latency_s"]
        met = r["sweep_s"] is not None and r["sweep_s"] <= limit
        out.append((f"headline: {model} <= 1.1 x one call ({limit:.2f} s)", met, f"{_s(r['sweep_s'])} s"))
    for model in OURS:
        r = _find(results, "scale-100000", model)
        if r is None:
            out.append((f"100k: {model}", None, "not measured (run without --quick)"))
            continue
        sweep = r["sweep_s"]
        out.append(
            (
                f"100k: {model} sweep incl. adopting the jobs <= 1.1 x bound ({1.1 * r['sweep_bound_s']:.2f} s)",
                sweep is not None and sweep <= 1.1 * r["sweep_bound_s"],
                f"{_s(sweep)} s (of which adoption {_s(r['adopt_s'])} s; "
                f"{_s(None if sweep is None else sweep + r['start_s'])} s with the scheduler's start)",
            )
        )
        limit = r["poll_interval_s"] + r["call_latency_s"]
        p99 = r["detection"]["p99"]
        out.append(
            (
                f"100k: {model} detection lag p99 <= interval + call ({limit:.2f} s)",
                p99 is not None and p99 <= limit and not r["detection"]["undetected"],
                f"{_s(p99)} s",
            )
        )
        steady = r.get("loop_lag_steady_p99_ms")
        out.append(
            (
                f"100k: {model} loop lag p99 < 10 ms after warm-up (whole run p99 / max in brackets)",
                steady is not None and steady < 10,
                f"{_s(steady, 1)} ms ({_s(r['loop_lag_p99_ms'], 1)} / {_s(r.get('loop_lag_max_ms'), 1)} ms)",
            )
        )
        out.append(
            (f"100k: {model} < 1 KiB RSS per job", (r["bytes_per_job"] or 0) < 1024, f"{_s(r['bytes_per_job'], 0)} B")
        )
    ganga = _find(results, "scale-10000", "ganga-async")
    ours = [r for m in OURS if (r := _find(results, "scale-10000", m)) is not None]
    if ganga is not None and ours:
        for key, label in (("p99", "detection lag p99"), ("results_p99", "end-to-collected p99")):
            best = min(ours, key=lambda r: r["detection"][key] or float("inf"))
            theirs = ganga["detection"][key] or 0.0
            mine = best["detection"][key] or float("inf")
            censored = ">=" if ganga["detection"]["undetected" if key == "p99" else "uncollected"] else ""
            out.append(
                (
                    f"10k, equal intervals: best of ours ({best['model']}) {label} >= 5x lower than Ganga 8.7's loop",
                    theirs / mine >= 5,
                    f"{_s(mine)} s vs {censored}{_s(theirs)} s = {censored}{theirs / mine:.1f}x",
                )
            )
        cheapest = min(ours, key=lambda r: r["cpu_s"])
        out.append(
            (
                "10k, equal intervals: ... at no more CPU seconds than Ganga 8.7's loop",
                cheapest["cpu_s"] <= ganga["cpu_s"],
                ", ".join(f"{r['model']} {r['cpu_s']:.1f} s" for r in ours) + f" vs {ganga['cpu_s']:.1f} s",
            )
        )
    else:
        out.append(("10k: lag p99 >= 5x lower at no more CPU", None, "not measured (run without --quick)"))
    for real in sorted({r["workload"] for r in results if _group(r) == "real"}):
        theirs_row, ours_row = _find(results, real, "ganga-8.7.12"), _find(results, real, "drive")
        if theirs_row is None or ours_row is None:
            continue
        theirs_p99 = theirs_row["detection"]["results_p99"] or 0.0
        ours_p99 = ours_row["detection"]["results_p99"] or float("inf")
        out.append(
            (
                f"{real} (real Ganga, equal interval): drive end-to-completed p99 >= 5x lower than Ganga's loop",
                theirs_p99 / ours_p99 >= 5,
                f"{_s(ours_p99)} s vs {_s(theirs_p99)} s = {theirs_p99 / ours_p99:.1f}x; "
                f"CPU {ours_row['cpu_s']:.1f} s vs {theirs_row['cpu_s']:.1f} s",
            )
        )
    by_key = {(r["workload"], r["model"]): r for r in results}
    for r in results:
        if not r.get("fault") or r["model"] not in OURS:
            continue
        base = by_key.get((r["baseline"], r["model"]))
        if base is None:
            continue
        worst = 0.0
        for lane, stats in r["detection"]["by_lane"].items():
            if lane == r["fault"]["lane"]:
                continue
            before, after = base["detection"]["by_lane"][lane]["p99"], stats["p99"]
            if before and after is not None:
                worst = max(worst, after / before - 1)
        out.append(
            (f"{r['workload']}: {r['model']} healthy lanes' p99 within 10 %", worst <= 0.10, f"worst {worst:+.0%}")
        )
    return out


def targets_text(rows: Sequence[tuple[str, bool | None, str]]) -> str:
    marks = {True: "MET", False: "NOT MET", None: "n/a"}
    return "\n".join(f"- [{marks[met]}] {what}: {detail}" for what, met, detail in rows)


CONDITIONS = "2 cores, shared with other jobs"


def plots(results: Sequence[Result], directory: Path) -> list[Path]:
    """Lag over time per model, and sweep time versus job count, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    scale = [r for r in results if _group(r) == "scale"]
    if scale:
        biggest = max(r["jobs"] for r in scale)
        chosen = [r for r in scale if r["jobs"] == (10_000 if any(x["jobs"] == 10_000 for x in scale) else biggest)]
        fig, ax = plt.subplots(figsize=(9, 5))
        for r in chosen:
            series = r["detection"]["series"]
            if not series:
                continue
            missed = r["detection"]["undetected"]
            label = r["model"] if not missed else f"{r['model']} (>=: {missed} jobs not seen by the end, drawn at it)"
            ax.plot(
                [s[0] for s in series],
                [s[1] for s in series],
                label=label,
                marker="." if not missed else "x",
                linestyle="-" if not missed else ":",
                linewidth=1,
            )
        ax.set_yscale("log")
        ax.set_xlabel("seconds since the first counted job ended (by job end time)")
        ax.set_ylabel("detection lag, worst job ending in that second (s)")
        ax.set_title(
            f"Detection lag over time, {chosen[0]['jobs']:,} jobs on three backends, "
            f"every model polling every {_intervals(chosen[0])} s\n({CONDITIONS})"
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        path = directory / "bench-lag-over-time.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

        fig, ax = plt.subplots(figsize=(9, 5))
        models = sorted({r["model"] for r in scale}, key=lambda m: ("legacy", "ganga-async", *OURS).index(m))
        for model in models:
            points = sorted(
                (r["jobs"], r["sweep_s"] if r["sweep_s"] is not None else r["window"])
                for r in scale
                if r["model"] == model
            )
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=model)
        bounds = sorted({(r["jobs"], r["sweep_bound_s"]) for r in scale})
        ax.plot(
            [b[0] for b in bounds], [b[1] for b in bounds], linestyle="--", color="black", label="theoretical bound"
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("active jobs")
        ax.set_ylabel("full sweep time (s); unfinished sweeps drawn at the window length")
        ax.set_title(f"Time to confirm every job once, adoption included ({CONDITIONS})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        path = directory / "bench-sweep-vs-jobs.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
