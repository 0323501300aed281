"""Mixed precision and deterministic mode for the PyTorch-module trainers (GAN, DANN).

* :func:`autocast` -- ``precision="bf16"`` runs the forward passes under
  :class:`torch.autocast` with ``dtype=torch.bfloat16`` (linear and convolution layers in
  bfloat16 with float32 accumulation; losses such as ``cross_entropy`` and
  ``binary_cross_entropy_with_logits`` are autocast to float32).  Parameters, gradients and
  optimiser states stay float32, and bfloat16 has float32's exponent range, so no loss
  scaling is needed.  Evaluation metrics (accuracies, Fréchet distances, bounds) are never
  computed inside it.
* :func:`deterministic` -- ``torch.use_deterministic_algorithms(True)``, cuDNN without
  autotuning and a fixed cuBLAS workspace (``CUBLAS_WORKSPACE_CONFIG``) for the block, so a
  CUDA run is bit-reproducible (an operation without a deterministic kernel raises).

The SVI trainer (:mod:`ppl_gen.training`) has the same two options with an ELBO-specific
bf16 rule (every module output cast back to float32).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from ppl_gen.errors import PplGenError

#: Accepted ``--precision`` values.
PRECISIONS = ("fp32", "bf16")


def check_precision(value: str, flag: str = "--precision") -> str:
    """Return ``value`` if it is one of :data:`PRECISIONS`.

    Raises:
        PplGenError: naming ``flag`` otherwise.
    """
    if value not in PRECISIONS:
        raise PplGenError(f"{flag} must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """``torch.autocast(device.type, dtype=torch.bfloat16)`` for ``"bf16"``, a no-op for
    ``"fp32"``.

    Raises:
        PplGenError: unknown ``precision`` (``--precision``).
    """
    if check_precision(precision) == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def deterministic(enabled: bool, device: torch.device | str) -> Iterator[None]:
    """Deterministic algorithms inside the block when ``enabled`` (restored after)."""
    if not enabled:
        yield
        return
    if torch.device(device).type == "cuda":  # cuBLAS needs a fixed workspace
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    old = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old[0])
        torch.backends.cudnn.benchmark = old[1]


__all__ = ["PRECISIONS", "autocast", "check_precision", "deterministic"]
