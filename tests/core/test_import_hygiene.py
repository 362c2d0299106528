"""The wall between core and UI, checked the way an import would cross it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).parents[2] / "monitor_core"


def test_importing_monitor_core_does_not_import_textual_or_the_tui() -> None:
    code = (
        "import sys, monitor_core, monitor_core.backends, monitor_core.sim, monitor_core.transports;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'ganga_tui'));"
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_no_core_module_names_textual_or_ganga_tui_in_an_import() -> None:
    offenders = []
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("textual", "ganga_tui")]
    assert offenders == []


def test_import_linter_contract_holds() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--config", str(CORE.parent / "pyproject.toml")],
        capture_output=True,
        text=True,
        cwd=CORE.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "monitor_core never imports the UI KEPT" in result.stdout
