"""What a checkpoint records besides the components: the run's settings, a fingerprint of
its training data, and Pyro's parameter store; and the rule that a resume either continues
the same run or is refused.

Resume is exact or refuses (:func:`check_resume`): every setting recorded at the start must
be unchanged, except the ones the family lists as applied on resume (the number of epochs,
for example, after which a learning-rate schedule is recomputed from the new totals).  The
training data must be the same rows (same shape and content digest).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from ppl_gen.core.errors import PplGenError


def settings_record(config: Any) -> dict[str, Any]:
    """A JSON-able record of a settings dataclass (tuples become lists), as stored in
    checkpoints and compared on resume."""
    raw = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return {k: _plain(v) for k, v in raw.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def data_fingerprint(*tensors: torch.Tensor | None) -> dict[str, Any]:
    """``{"shapes": [...], "digest": hex}``: the shapes and a BLAKE2 digest of the content
    of the training tensors (about 0.1 s per 50 MB), so a resume on other data of the same
    shape is recognised."""
    digest = hashlib.blake2b(digest_size=16)
    shapes = []
    for t in tensors:
        if t is None:
            shapes.append(None)
            continue
        shapes.append(list(t.shape))
        digest.update(str(t.dtype).encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return {"shapes": shapes, "digest": digest.hexdigest()}


def check_resume(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    may_change: Iterable[str],
    *,
    saved_data: Mapping[str, Any] | None = None,
    current_data: Mapping[str, Any] | None = None,
) -> None:
    """Refuse a resume whose settings or data differ from the checkpoint's.

    Args:
        saved, current: :func:`settings_record` of the checkpoint's run and of this one.
        may_change: settings this family applies on resume (e.g. ``epochs``).
        saved_data, current_data: :func:`data_fingerprint` of both runs' training data.

    Raises:
        PplGenError: naming the first changed setting (its parameter name) and both values,
            or the data.
    """
    allowed = set(may_change)
    for key in sorted(set(saved) | set(current)):
        if key in allowed:
            continue
        old, new = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if old != new:
            raise PplGenError(
                f"{key} {new!r} differs from the checkpoint's {old!r}: resume continues a run "
                "only with its own settings (keep it, or start a fresh run without resume)"
            )
    if saved_data is not None and current_data is not None and saved_data != current_data:
        what = (
            f"shapes {saved_data.get('shapes')} vs {current_data.get('shapes')}"
            if saved_data.get("shapes") != current_data.get("shapes")
            else "same shapes, different content"
        )
        raise PplGenError(
            f"data differ from the checkpoint's training data ({what}): resume continues a run "
            "only on its own data (start a fresh run without resume)"
        )


def param_store_state() -> dict[str, torch.Tensor]:
    """Pyro's global parameter store as ``{name: unconstrained value}`` (detached
    tensors; constraints are not stored: the model re-creates them when it runs)."""
    import pyro

    store = pyro.get_param_store()
    return {name: store[name].unconstrained().detach().clone() for name in store.keys()}


def restore_param_store(saved: Mapping[str, torch.Tensor]) -> None:
    """Copy ``saved`` unconstrained values into the live parameter store, in place (so an
    optimiser holding those tensors keeps them).

    The model and guide must have run once (parameter discovery) so that every parameter
    exists with its constraint.

    Raises:
        PplGenError: the store and the checkpoint do not hold the same parameter names and
            shapes (the model changed).
    """
    import pyro

    store = pyro.get_param_store()
    live = set(store.keys())
    if set(saved) != live:
        missing = sorted(set(saved) - live)[:3]
        extra = sorted(live - set(saved))[:3]
        raise PplGenError(
            "model/guide Pyro parameters differ from the checkpoint's (checkpoint only: "
            f"{missing}, this model only: {extra})"
        )
    with torch.no_grad():
        for name, value in saved.items():
            target = store[name].unconstrained()
            if target.shape != value.shape:
                raise PplGenError(
                    f"Pyro parameter {name!r} has shape {tuple(target.shape)}, the checkpoint's "
                    f"{tuple(value.shape)} (the model changed)"
                )
            target.copy_(value.to(target.device))
