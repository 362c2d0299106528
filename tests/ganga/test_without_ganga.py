"""monitor_core.ganga imports in a plain Python, and says clearly where it must run."""

from __future__ import annotations

import subprocess
import sys


def test_imports_without_ganga_and_explains_where_it_runs() -> None:
    # A plain interpreter: GangaCore is only importable once the `ganga` launcher set up sys.path.
    code = (
        "import importlib.util, sys\n"
        "assert importlib.util.find_spec('GangaCore') is None\n"
        "from monitor_core.ganga import start_monitor\n"
        "try:\n"
        "    start_monitor()\n"
        "except RuntimeError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(0)\n"
        "sys.exit(1)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "inside a Ganga session" in result.stdout
    assert "ganga-monitor[ganga]" in result.stdout
