"""What starting a viewer loads."""

from __future__ import annotations

import subprocess
import sys


def test_a_viewer_that_does_not_use_mqtt_does_not_load_its_client() -> None:
    # aiomqtt and paho are 6.4 MB of a viewer's memory; they load when --mqtt makes a client.
    code = (
        "import sys, ganga_tui.app, ganga_tui.sources, ganga_tui.__main__;"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('aiomqtt', 'paho'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
