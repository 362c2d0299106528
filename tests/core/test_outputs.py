"""The session's outputs directory: what it keeps in memory of each collected job."""

from __future__ import annotations

import sys
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


def test_a_jobs_directory_leaves_its_id_out_of_the_interned_strings(tmp_path: Path) -> None:
    sink = OutputSink(tmp_path / "outputs")
    job_id = "".join(["job-", "58", "29371"])  # made at run time, as a session makes its ids
    _collect(sink, job_id, ["std.out"])
    assert sink.path(job_id).name == job_id
    # Interned, the id would keep an entry in the interpreter's table for the job's life.
    assert sys.intern("".join(["job-", "5829371"])) is not job_id
