"""The headless wait contract: conditions, exit codes and the JSON-lines summary, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ganga_tui._cli import EXIT_CODES
from ganga_tui.wait_contract import Condition, ConditionError
from monitor_core import JobAdded, JobChanged, JobRecord, JobStatus, StateFold

pytestmark = pytest.mark.timeout(180)

FAST = ["--latency", "20ms", "--poll-interval", "0.3", "--mean-duration", "1"]


def run_cli(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ganga_tui", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_conditions_parse_with_the_option_default_quantifier() -> None:
    assert str(Condition.parse("all:final", default="all")) == "all:all:final"
    assert str(Condition.parse("any:failed", default="all")) == "any:all:failed"
    assert str(Condition.parse("group:g1:final", default="all")) == "all:group:g1:final"
    assert str(Condition.parse("backend:local:failed", default="any")) == "any:backend:local:failed"
    assert str(Condition.parse("all:group:g1:failed", default="any")) == "all:group:g1:failed"
    for bad in ("final", "group::final", "all:done", "pool:x:final"):
        with pytest.raises(ConditionError):
            Condition.parse(bad, default="all")


def test_conditions_hold_on_the_fold_counts() -> None:
    store = StateFold()
    for job_id, backend, group in (("1", "local", "a"), ("2", "local", "b"), ("3", "grid", "b")):
        store.apply(
            JobAdded(at=0, job=JobRecord(job_id=job_id, backend=backend, status=JobStatus.RUNNING, group=group))
        )
    group_a = Condition.parse("group:a:final", default="all")
    local = Condition.parse("backend:local:final", default="all")
    failed = Condition.parse("any:failed", default="any")
    assert not group_a.holds(store)
    store.apply(
        JobChanged(at=1, job_id="1", backend="local", old=JobStatus.RUNNING, new=JobStatus.COMPLETED, source="poll")
    )
    assert group_a.holds(store)
    assert not local.holds(store)
    assert not failed.holds(store)
    store.apply(
        JobChanged(at=2, job_id="2", backend="local", old=JobStatus.RUNNING, new=JobStatus.FAILED, source="poll")
    )
    assert local.holds(store)
    assert failed.holds(store)
    assert not Condition.parse("group:nosuch:final", default="all").holds(store)


def test_until_a_backend_is_final_exits_0_with_the_reason_in_the_summary_line(tmp_path: Path) -> None:
    result = run_cli(
        "--demo", "--headless", "--json", "--jobs", "60", "--until", "backend:local:final",
        "--state-dir", str(tmp_path / "s"), *FAST,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["v"] == 2
    assert summary["type"] == "Summary"
    assert summary["data"]["exit_code"] == 0
    assert summary["data"]["reason"] == "--until all:backend:local:final held"


def test_fail_on_any_failed_exits_4(tmp_path: Path) -> None:
    result = run_cli(
        "--demo", "--headless", "--jobs", "40", "--failure-rate", "0.5", "--until", "all:final",
        "--fail-on", "any:failed", "--state-dir", str(tmp_path / "s"), *FAST,
    )  # fmt: skip
    assert result.returncode == 4, result.stdout[-2000:] + result.stderr[-2000:]
    assert "exit 4: --fail-on any:all:failed held" in result.stdout


def test_timeout_before_the_condition_exits_3(tmp_path: Path) -> None:
    result = run_cli(
        "--demo", "--headless", "--json", "--jobs", "20", "--backends", "dirac-sim", "--mean-duration", "60",
        "--until", "all:final", "--timeout", "1.5s", "--state-dir", str(tmp_path / "s"), "--latency", "20ms",
    )  # fmt: skip
    assert result.returncode == 3, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1])["data"]["exit_code"] == 3


def test_until_done_is_all_final(tmp_path: Path) -> None:
    result = run_cli(
        "--demo", "--headless", "--json", "--jobs", "30", "--until-done", "--state-dir", str(tmp_path / "s"), *FAST
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout.splitlines()[-1])["data"]
    assert data["ok"] is True
    assert data["reason"] == "every job is final and truly stated"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--demo", "--headless", "--until", "everything"], "cannot read condition"),
        (["--demo", "--headless", "--fail-on", "any:exploded"], "unknown state"),
        (["--demo", "--until", "all:final"], "go with --headless"),
    ],
)
def test_bad_conditions_exit_2_with_a_clear_message(flags: list[str], message: str) -> None:
    result = run_cli(*flags, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr


def test_every_exit_code_is_documented_in_help() -> None:
    result = run_cli("--help", timeout=30)
    for code in EXIT_CODES:
        assert f"  {code} " in result.stdout


def test_an_empty_state_is_final_only_once_the_session_says_it_has_no_jobs() -> None:
    from monitor_core import Heartbeat, Snapshot

    done = Condition.parse("all:final", default="all")
    fold = StateFold()
    fold.apply(Snapshot(at=0, session="s"))  # a broker's viewer before the session published
    assert not done.holds(fold)
    fold.apply(Heartbeat(at=1, seq=1, jobs_total=3, jobs_active=3, jobs_final=0))
    assert not done.holds(fold)
    fold.apply(Heartbeat(at=2, seq=2, jobs_total=0, jobs_active=0, jobs_final=0))
    assert done.holds(fold)
    assert not Condition.parse("group:g:final", default="all").holds(fold)
