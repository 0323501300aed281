"""Checkpoints: one ``torch.save`` file, written atomically and durably, that cannot run code.

A checkpoint holds only tensors, numbers, strings, lists and dicts (random states are
stored as tensors and lists, see :mod:`ppl_gen.engine.rng`), so it is read with
``torch.load(..., weights_only=True)``: PyTorch's restricted unpickler refuses any other
object, and a crafted file whose pickle would call a function (``__reduce__``) is rejected
before anything runs.  Writing goes through :func:`ppl_gen.core.io.torch_save` (temporary
file in the same folder, ``fsync``, rename).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ppl_gen.core.errors import PplGenError
from ppl_gen.core.io import torch_save

FORMAT = "ppl_gen-checkpoint-v2"

#: What a checkpoint of each kind must hold to be loaded (evaluated, resumed, decoded);
#: a checkpoint lacking one is refused as incomplete by :func:`load_checkpoint`.  Kinds not
#: listed are checked by their own loaders.
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    # Plain-function models and guides have no modules: their weights are "pyro_params".
    "latent-variable": ("config", "spec"),
    "autoencoder": ("spec", "model"),
    "cvae": ("spec", "model", "guide"),
    "gan": ("config", "image_shape", "generator"),
    "dcgan": ("config", "image_shape", "generator"),
    "cgan": ("config", "image_shape", "generator"),
    "cyclegan": ("config", "image_shapes", "nets"),
    "classifier": ("model",),
}


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus a format tag) to ``path`` atomically and durably: a crash
    while writing leaves the previous checkpoint intact.

    Args:
        path: destination file.
        state: tensors, numbers, strings, ``None`` and lists/tuples/dicts of them (what
            ``torch.load(weights_only=True)`` accepts).
    """
    return torch_save(path, {"format": FORMAT, **state})


def safe_load(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", *, what: str = "CHECKPOINT"
) -> Any:
    """``torch.load(path, weights_only=True)`` with a one-line error.

    Raises:
        PplGenError: naming ``what`` if the file is missing, unreadable, or holds anything
            but tensors and plain containers (a pickle that would run code is refused).
    """
    path = Path(path)
    if not path.is_file():
        raise PplGenError(f"{what}: no such file {str(path)!r}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        text = str(exc).strip()
        if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
            reason = "it holds Python objects that could run code; refused"
        else:
            reason = text.splitlines()[0][:120] if text else type(exc).__name__
        raise PplGenError(f"{what}: cannot read {str(path)!r} ({reason})") from None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (weights only, module docs).

    Raises:
        PplGenError: naming ``CHECKPOINT`` if the file is missing, unreadable, unsafe or
            not a ppl_gen checkpoint of this format.
    """
    state = safe_load(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        hint = " (written by an older ppl_gen; retrain)" if found else ""
        raise PplGenError(
            f"CHECKPOINT: {str(Path(path))!r} is not a ppl_gen checkpoint ({FORMAT}){hint}"
        )
    kind = state.get("kind")  # written by every trainer; what each kind needs is checked
    missing = [key for key in REQUIRED_KEYS.get(kind, ()) if key not in state]
    if missing:
        raise PplGenError(
            f"CHECKPOINT: {str(Path(path))!r} is an incomplete {kind} checkpoint (no "
            f"{', '.join(map(repr, missing))}); it was not written by ppl_gen train, or was "
            "edited"
        )
    return state


def weights_mismatch(exc: BaseException) -> str | None:
    """The one-line ``CHECKPOINT: ...`` message for ``load_state_dict`` refusing a
    checkpoint's weights (they do not fit the network its spec describes: the spec or the
    weights were edited, or come from different runs); ``None`` for any other error."""
    text = str(exc).strip()
    if not isinstance(exc, RuntimeError) or not text.startswith("Error(s) in loading state_dict"):
        return None
    detail = " ".join(text.splitlines()[1:2]).strip()
    return (
        "CHECKPOINT: its weights do not fit the network its spec describes "
        f"({detail[:160] or 'mismatched tensors'}); was the checkpoint edited?"
    )
