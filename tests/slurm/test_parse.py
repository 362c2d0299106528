"""The Slurm answer parser on its own: every state, and every kind of garbage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor_core import JobStatus
from monitor_core.backends import Rejection, StatusReport
from monitor_core.backends._slurm_parse import (
    SLURM_STATES,
    decode_wait_status,
    parse_jobcomp,
    parse_key_values,
    parse_sacct,
    parse_scontrol_job,
    parse_squeue,
    slurm_status,
)

# `squeue -t BOGUS` of Slurm 22.05 lists the valid state names in this order.
SQUEUE_STATE_NAMES = [
    *("PENDING", "RUNNING", "SUSPENDED", "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED"),
    *("BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "COMPLETING", "CONFIGURING", "RESIZING", "RESV_DEL_HOLD"),
    *("REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "REVOKED", "SIGNALING", "SPECIAL_EXIT", "STAGE_OUT", "STOPPED"),
]

EXPECTED = {
    "PENDING": JobStatus.SUBMITTED,
    "CONFIGURING": JobStatus.SUBMITTED,
    "REQUEUED": JobStatus.SUBMITTED,
    "REQUEUE_FED": JobStatus.SUBMITTED,
    "REQUEUE_HOLD": JobStatus.SUBMITTED,
    "RESV_DEL_HOLD": JobStatus.SUBMITTED,
    "RUNNING": JobStatus.RUNNING,
    "COMPLETING": JobStatus.RUNNING,
    "SUSPENDED": JobStatus.RUNNING,
    "STOPPED": JobStatus.RUNNING,
    "RESIZING": JobStatus.RUNNING,
    "SIGNALING": JobStatus.RUNNING,
    "STAGE_OUT": JobStatus.RUNNING,
    "COMPLETED": JobStatus.COMPLETED,
    "FAILED": JobStatus.FAILED,
    "TIMEOUT": JobStatus.FAILED,
    "NODE_FAIL": JobStatus.FAILED,
    "PREEMPTED": JobStatus.FAILED,
    "OUT_OF_MEMORY": JobStatus.FAILED,
    "BOOT_FAIL": JobStatus.FAILED,
    "DEADLINE": JobStatus.FAILED,
    "SPECIAL_EXIT": JobStatus.FAILED,
    "CANCELLED": JobStatus.KILLED,
    "REVOKED": JobStatus.UNKNOWN,
}

TIMEOUT_LINE = (
    "JobId=15 JobName=timeout UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901745 Nice=0 "
    "Account=(null) QOS=(null) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) Requeue=1 Restarts=0 "
    "BatchFlag=1 Reboot=0 ExitCode=0:15 RunTime=00:01:28 TimeLimit=00:01:00 TimeMin=N/A "
    "SubmitTime=2026-11-23T19:12:40 AllocNode:Sid=localhost:3194 CPUs/Task=1 ReqB:S:C:T=0:0:*:* "
    "WorkDir=/work/run2 StdErr=/work/run2/timeout-15.out StdIn=/dev/null StdOut=/work/run2/timeout-15.out Power= "
)


def test_every_slurm_state_is_mapped_and_nothing_else() -> None:
    assert set(SLURM_STATES) == set(SQUEUE_STATE_NAMES)


@pytest.mark.parametrize(("state", "status"), sorted(EXPECTED.items()))
def test_state_maps_to_ganga_status(state: str, status: JobStatus) -> None:
    assert slurm_status(state) == status
    answer = parse_squeue(["7"], f"7|{state}|None|0|\n")
    assert answer.result.reports[0].status == status
    assert not answer.result.rejections


def test_sacct_state_suffix_is_understood_and_unknown_names_are_not() -> None:
    assert slurm_status("CANCELLED by 0") == JobStatus.KILLED
    assert slurm_status("LEVITATING") is None
    assert slurm_status("running") is None
    assert slurm_status("") is None


def test_squeue_answer_gives_reports_exit_codes_and_missing_ids() -> None:
    text = "1|COMPLETED|None|0|\n3|FAILED|NonZeroExitCode|768|\n4|CANCELLED|None|15|\n2|RUNNING|None|0|\n"
    answer = parse_squeue(["1", "2", "3", "4", "5"], text)
    by_id = {r.backend_id: r for r in answer.result.reports}
    assert by_id["1"] == StatusReport("1", JobStatus.COMPLETED, "COMPLETED", 0)
    assert by_id["3"] == StatusReport("3", JobStatus.FAILED, "FAILED (NonZeroExitCode)", 3)
    assert by_id["4"].exit_code == -15
    assert by_id["2"].exit_code is None
    assert answer.missing == ("5",)
    assert decode_wait_status(768) == (3, 0)


@pytest.mark.parametrize(
    ("line", "category", "backend_id"),
    [
        ("8|LEVITATING|None|0|", "unknown_state", "8"),
        ("8|RUNNING|None|0", "garbage", "8"),  # cut before its last separator
        ("8|RUNN", "garbage", "8"),
        ("8|RUNNING|None|zero|", "garbage", "8"),
        ("8|RUNNING|None|0|extra|", "garbage", "8"),
        ("squeue: warning: something", "garbage", None),
        ("|RUNNING|None|0|", "garbage", None),
        ("99|RUNNING|None|0|", "garbage", "99"),  # not asked for
    ],
)
def test_squeue_garbage_is_rejected_never_reported(line: str, category: str, backend_id: str | None) -> None:
    answer = parse_squeue(["8"], line + "\n")
    assert answer.result.reports == []
    assert answer.result.rejections == [Rejection(backend_id, category, answer.result.rejections[0].reason)]  # type: ignore[arg-type]


def test_a_rejected_line_for_a_job_does_not_make_it_missing() -> None:
    answer = parse_squeue(["8", "9"], "8|LEVITATING|None|0|\n9|RUNNING|None|0\n")
    assert answer.missing == ()
    assert [r.category for r in answer.result.rejections] == ["unknown_state", "garbage"]


def test_a_job_named_twice_is_believed_once() -> None:
    answer = parse_squeue(["8"], "8|RUNNING|None|0|\n8|COMPLETED|None|0|\n")
    assert [r.status for r in answer.result.reports] == [JobStatus.RUNNING]
    assert [r.category for r in answer.result.rejections] == ["garbage"]


def test_scontrol_line_with_spaces_in_values() -> None:
    fields = parse_key_values(TIMEOUT_LINE.replace("JobName=timeout", "JobName=name with space"))
    assert fields["JobName"] == "name with space"
    assert fields["AllocNode:Sid"] == "localhost:3194"
    assert fields["StdOut"] == "/work/run2/timeout-15.out"
    assert fields["Power"] == ""
    assert parse_scontrol_job("15", TIMEOUT_LINE) == StatusReport("15", JobStatus.FAILED, "TIMEOUT (TimeLimit)", -15)


@pytest.mark.parametrize(
    ("text", "category"),
    [
        (TIMEOUT_LINE.replace("JobState=TIMEOUT", "JobState=EXPLODED"), "unknown_state"),
        (TIMEOUT_LINE.replace("ExitCode=0:15", "ExitCode=banana"), "garbage"),
        (TIMEOUT_LINE.replace("JobId=15", "JobId=16"), "garbage"),
        (TIMEOUT_LINE[:120], "garbage"),  # cut before JobState
        (TIMEOUT_LINE + "\n" + TIMEOUT_LINE, "garbage"),
        ("", "garbage"),
    ],
)
def test_scontrol_garbage_is_rejected(text: str, category: str) -> None:
    answer = parse_scontrol_job("15", text)
    assert isinstance(answer, Rejection)
    assert answer.category == category


def test_sacct_lines() -> None:
    result = parse_sacct(
        ["1", "2", "3"], "1|CANCELLED by 0|0:15\n2|COMPLETED|0:0\n3|WHATEVER|0:0\nnonsense\n7|FAILED|1:0\n"
    )
    assert [(r.backend_id, r.status, r.exit_code) for r in result.reports] == [
        ("1", JobStatus.KILLED, -15),
        ("2", JobStatus.COMPLETED, 0),
    ]
    assert [(r.backend_id, r.category) for r in result.rejections] == [("3", "unknown_state"), (None, "garbage")]


def test_jobcomp_last_record_of_a_requeued_job_wins() -> None:
    log = (
        "JobId=5 UserId=root(0) Name=wrap JobState=PENDING Partition=debug ExitCode=0:0 \n"
        "JobId=6 UserId=root(0) Name=other JobState=FAILED ExitCode=3:0 \n"
        "JobId=5 UserId=root(0) Name=wrap JobState=COMPLETED Partition=debug ExitCode=0:0 \n"
    )
    result = parse_jobcomp(["5"], log)
    assert result.reports == [StatusReport("5", JobStatus.COMPLETED, "COMPLETED", 0)]
    assert not result.rejections


@given(
    requested=st.lists(st.integers(min_value=1, max_value=50).map(str), unique=True, max_size=10),
    text=st.text(alphabet=st.sampled_from(list("0123456789|\n RUNIGCOMPLETEDNoe")), max_size=300),
)
def test_any_squeue_output_is_accounted_for_without_raising(requested: list[str], text: str) -> None:
    answer = parse_squeue(requested, text)
    reported = [r.backend_id for r in answer.result.reports]
    assert len(reported) == len(set(reported))
    assert set(reported) <= set(requested)
    assert not set(reported) & set(answer.missing)
    for report in answer.result.reports:
        assert report.status == SLURM_STATES[report.info.split(" ", 1)[0]]
