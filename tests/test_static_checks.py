"""The static checks are tests: ``python -m pytest`` (and so CI) fails when one of them does.

Each runs as the developer would run it, from the project's root, with this checkout first on
the path so that the code checked is this one and not an installed copy.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)


def _passes(result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode != 0:
        pytest.fail(f"{' '.join(result.args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"[-20_000:])


def test_mypy_strict_passes_on_monitor_core_ganga_tui_and_benchmarks() -> None:
    # The files checked (monitor_core, ganga_tui, benchmarks) and --strict come from pyproject's [tool.mypy].
    _passes(_run(sys.executable, "-m", "mypy"))


def test_ruff_check_passes() -> None:
    _passes(_run(sys.executable, "-m", "ruff", "check", "."))


def test_import_contracts_are_kept() -> None:
    _passes(_run(sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; c()"))
