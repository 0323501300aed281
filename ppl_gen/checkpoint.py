"""Checkpoints: one ``torch.save`` file, written atomically, read back with clear errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ppl_gen.errors import PplGenError
from ppl_gen.io import torch_save

FORMAT = "ppl_gen-checkpoint-v1"


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus a format tag) to ``path`` atomically: a crash while writing
    leaves the previous checkpoint intact."""
    return torch_save(path, {"format": FORMAT, **state})


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        PplGenError: naming ``CHECKPOINT`` if the file is missing, unreadable or not a
            ppl_gen checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise PplGenError(f"CHECKPOINT: no such file {str(path)!r}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many types for corrupt files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PplGenError(
            f"CHECKPOINT: cannot read {str(path)!r} as a ppl_gen checkpoint ({reason[:120]})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise PplGenError(f"CHECKPOINT: {str(path)!r} is not a ppl_gen checkpoint ({FORMAT})")
    return state
