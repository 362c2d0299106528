"""Files another process reads while they may be written: each is found whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_whole"]


def write_whole(path: Path, text: str, *, mode: int | None = None) -> None:
    """Write ``text`` to ``path`` so that a reader finds the file as it was or as it is now, never half written.

    The text goes to a file of this process's own beside ``path`` first (given ``mode``, if
    any), which then takes the path's place in one rename.
    """
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    if mode is not None:
        temporary.chmod(mode)
    os.replace(temporary, path)
