"""Screenshots of each main view of the TUI on a live simulated session: screenshots/tui-*.svg and .png.

Run: ``python benchmarks/tui_screenshots.py`` (PNG needs ``rsvg-convert``, Debian package librsvg2-bin).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from textual.pilot import Pilot

from ganga_tui.app import GangaMonitorApp
from monitor_core import SessionConfig

OUT = Path(__file__).resolve().parents[1] / "screenshots"


def to_png(svg: Path) -> None:
    converter = shutil.which("rsvg-convert")
    if converter is None:
        print("rsvg-convert not found; SVG only", file=sys.stderr)
        return
    # librsvg collapses runs of no-break spaces that Textual uses for alignment; plain spaces kept verbatim do not.
    text = svg.read_text().replace("&#160;", " ")
    text = re.sub(r"<svg ", '<svg xml:space="preserve" ', text, count=1)
    with tempfile.NamedTemporaryFile("w", suffix=".svg", delete=False) as tmp:
        tmp.write(text)
    subprocess.run([converter, "-w", "1600", tmp.name, "-o", str(svg.with_suffix(".png"))], check=True)
    Path(tmp.name).unlink()


async def shoot(app: GangaMonitorApp, pilot: Pilot[int], name: str) -> None:
    await pilot.pause(0.3)
    path = Path(app.save_screenshot(filename=f"{name}.svg", path=str(OUT)))
    to_png(path)
    print(path)


async def run(size: tuple[int, int], state_dir: Path, views: bool) -> None:
    config = SessionConfig(state_dir=state_dir, jobs=3000, dirac_error_rate=0.02)
    app = GangaMonitorApp(demo=config)
    async with app.run_test(size=size) as pilot:
        for _ in range(3000):
            if app.store.final >= 600:
                break
            await pilot.pause(0.01)
        suffix = f"{size[0]}x{size[1]}"
        await shoot(app, pilot, f"tui-dashboard-{suffix}")
        if views:
            await pilot.press("slash", *"s:completing,running g:dirac-sim-batch003", "enter")
            await shoot(app, pilot, f"tui-filtered-{suffix}")
            await pilot.press("escape", "f", "f", "f", "f", "f", "enter")
            await pilot.pause(1.0)
            await shoot(app, pilot, f"tui-job-detail-{suffix}")
            await pilot.press("escape", "escape", "question_mark")
            await shoot(app, pilot, f"tui-help-{suffix}")
            await pilot.press("escape", "w")
            await shoot(app, pilot, f"tui-warnings-{suffix}")
            await pilot.press("escape")
        await app.action_quit()


def main() -> None:
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run((200, 50), Path(tmp) / "wide", views=True))
        asyncio.run(run((80, 24), Path(tmp) / "narrow", views=False))


if __name__ == "__main__":
    main()
