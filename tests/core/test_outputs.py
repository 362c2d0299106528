"""The session's outputs directory: what it keeps in memory of each collected job."""

from __future__ import annotations

from pathlib import Path

from monitor_core._outputs import OutputSink


def _collect(sink: OutputSink, job_id: str, names: list[str]) -> None:
    staging = sink.prepare(job_id)
    for name in names:
        (staging / name).write_text(job_id)
    assert sink.commit(job_id, staging)


def test_jobs_that_wrote_the_same_files_share_one_list_of_names(tmp_path: Path) -> None:
    sink = OutputSink(tmp_path / "outputs")
    for job_id in ("1", "2"):
        _collect(sink, job_id, ["std.out", "result.txt"])
    _collect(sink, "3", ["std.out", "other.root"])
    first, second, third = (sink.files(job_id) for job_id in ("1", "2", "3"))
    assert first == ("result.txt", "std.out")
    assert first is second, "kept for every collected job for the session's life: one tuple, not one a job"
    assert third == ("other.root", "std.out")
    assert third[1] is first[1], "and one string per name"
