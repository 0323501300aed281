"""Random-number state in a form a weights-only checkpoint can hold.

``--seed`` seeds every stream a run draws from (:func:`seed_everything`): Python's
``random``, NumPy's global generator, torch's CPU and CUDA generators (Pyro samples from
torch's), and each family's named :class:`torch.Generator` streams (minibatch order,
noise, binarisation), which the family creates from the seed itself.

:func:`capture` / :func:`restore` turn the global streams into tensors, ints, lists and
strings only, so a checkpoint holding them loads with ``torch.load(..., weights_only=True)``
(NumPy's state is an ``ndarray`` and Python's a tuple; neither is stored as such).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from ppl_gen.core.device import to_device


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA
    device; Pyro draws from torch's generator), as ``pyro.set_rng_seed`` does.

    Raises:
        ValueError: ``seed`` outside ``0 .. 2**32 - 1`` (NumPy's range); callers validate
            it first with :func:`ppl_gen.core.errors.require_seed`.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def capture() -> dict[str, Any]:
    """The global random state of this process (Python, NumPy, torch, CUDA when in use)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "random": [int(version), [int(v) for v in internal], gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture` (tensors may be on any device)."""
    state = to_device(state, "cpu")
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def capture_generators(generators: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    """``{name: generator.get_state()}`` (CPU byte tensors)."""
    return {name: gen.get_state() for name, gen in generators.items()}


def restore_generators(generators: dict[str, torch.Generator], states: dict) -> None:
    """Set each named generator from ``states`` (as written by :func:`capture_generators`).

    Raises:
        KeyError: a generator missing from ``states`` (the engine refuses such a resume
            before calling this).
    """
    for name, gen in generators.items():
        gen.set_state(states[name].cpu())
