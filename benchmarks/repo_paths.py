"""Paths as the benchmark outputs show them: never an absolute path of the machine.

``shown(path)`` is ``path`` relative to the repository (``benchmarks/results/x.json``,
``../shared/data``), or under ``~`` for files in the user's home (the judge cache).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shown(path: str | os.PathLike) -> str:
    """``path`` relative to the repository, or ``~/...`` inside the home folder."""
    path = Path(path).expanduser().resolve()
    home = Path.home().resolve()
    if path.is_relative_to(home) and not path.is_relative_to(REPO):
        return str(Path("~") / path.relative_to(home))
    return os.path.relpath(path, REPO)
