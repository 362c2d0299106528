"""The end-of-run summary of any source, from the one fold; a demo adds its audit of intended outcomes."""

from __future__ import annotations

from dataclasses import replace

from monitor_core import JobStatus, SessionSummary, StateFold, percentile
from monitor_core._session import BackendSummary

__all__ = ["summarize"]


def summarize(fold: StateFold, elapsed: float, audit: SessionSummary | None = None) -> SessionSummary:
    """The run's figures as the events told them.

    Args:
        fold: everything the stream said.
        elapsed: seconds watched.
        audit: the session's own audit (a demo knows each job's intended outcome); its
            planned count, lost and mis-stated jobs and collected outputs replace what the
            events alone can tell.
    """
    backends = []
    names = sorted(set(fold.backends) | set(fold.by_backend))
    for name in names:
        record = fold.backends.get(name)
        figures = fold.figures_of(name)
        status_lag = list(figures.status_lag)
        results = list(figures.end_to_collected)
        backends.append(
            BackendSummary(
                name=name,
                jobs=sum(fold.by_backend.get(name, {}).values()),
                lag_p50=percentile(status_lag, 0.5),
                lag_p99=percentile(status_lag, 0.99),
                lag_max=max(status_lag, default=0.0),
                calls=record.calls_total if record is not None else 0,
                retries=record.retries_total if record is not None else 0,
                rejections=record.rejections_total if record is not None else 0,
                results_p50=percentile(results, 0.5),
                results_p99=percentile(results, 0.99),
                results_max=max(results, default=0.0),
                results_jobs=len(results),
            )
        )
    lost = tuple(
        job_id
        for job_id, record in fold.jobs.items()
        if not record.status.is_final or record.status == JobStatus.UNKNOWN
    )
    summary = SessionSummary(
        jobs=fold.total,
        planned=fold.total,
        by_status={status.value: count for status, count in sorted(fold.counts.items()) if count},
        backends=tuple(backends),
        operations=sum(item.calls for item in backends),
        retries=sum(item.retries for item in backends),
        rejections=fold.counters.get("rejections", 0),
        outputs_collected=fold.counts.get(JobStatus.COMPLETED, 0),
        lost=lost,
        misstated=(),
        elapsed=elapsed,
    )
    if audit is None:
        return summary
    return replace(
        summary,
        planned=audit.planned,
        lost=audit.lost,
        misstated=audit.misstated,
        outputs_collected=audit.outputs_collected,
    )
