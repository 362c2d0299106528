"""The live benchmark names each process's part in the run, so each role's RSS is its own."""

from __future__ import annotations

from benchmarks.live.processes import classify

SESSION = ["python", "-m", "monitor_core.sim.cli", "--serve", "--jobs", "100000"]
TUI = ["python", "ganga-monitor-tui", "--demo", "--jobs", "100000"]


def _role(command: list[str], pid: int) -> str:
    return classify(
        command, pid=pid, tui_pid=10, session_pid=20, viewer_pid=30, tui_command=TUI, session_command=SESSION
    )


def test_a_fork_is_not_counted_as_the_process_it_was_forked_from() -> None:
    assert _role(TUI, 10) == "tui"
    assert _role(TUI, 11) == "tui forks"
    assert _role(SESSION, 20) == "session"
    assert _role(SESSION, 21) == "session forks", "a local job between fork and exec: the session's pages again"
    assert _role(["sleep", "3"], 22) == "local jobs"
