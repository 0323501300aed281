"""The data plate convention shared by every model and guide in ppl_gen.

A ppl_gen model (declared or hand-written) is a Pyro callable ``model(x, indices=None,
size=None)`` that puts every per-datapoint variable inside ``data_plate(x, indices, size)``;
its guide takes the same arguments.  ``x: (batch, ...)`` is a minibatch, ``indices:
(batch,)`` are the positions of its rows in the full dataset of ``size`` rows.  Under
subsampling (``size > batch``) Pyro scales the log-densities by ``size / batch`` so the
ELBO is an unbiased estimate of the full-data ELBO; per-datapoint guides index their local
parameters with the same ``indices``.
"""

from __future__ import annotations

import pyro
import torch

DATA_PLATE = "data"


def data_plate(
    x: torch.Tensor,
    indices: torch.Tensor | None = None,
    size: int | None = None,
    *,
    dim: int = -1,
) -> pyro.plate:
    """The ``pyro.plate`` named ``"data"`` over the rows of ``x``.

    Args:
        x: ``(batch, ...)`` minibatch; its device is the plate's device.
        indices: ``(batch,)`` int64 positions of the rows in the full dataset; defaults to
            ``0..batch-1``.
        size: number of rows of the full dataset; defaults to ``batch`` (no scaling).
        dim: the plate's batch dimension (``-1``: one row per datapoint).

    Returns:
        ``pyro.plate("data", size, subsample=indices, dim=dim)``.
    """
    batch = x.shape[0]
    if indices is None:
        indices = torch.arange(batch, device=x.device)
    return pyro.plate(DATA_PLATE, size if size is not None else batch, subsample=indices, dim=dim)


def flatten_rows(x: torch.Tensor, data_dim: int, owner: str = "model") -> torch.Tensor:
    """``(N, *image_shape) -> (N, D)``, checking that every row has ``data_dim`` values.

    Raises:
        PplGenError: naming ``x`` if it is not a tensor of at least 2 dims whose rows have
            ``data_dim`` values.
    """
    from ppl_gen.core.errors import PplGenError

    if not torch.is_tensor(x) or x.dim() < 2:
        got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise PplGenError(f"x: expected a tensor of shape (N, {data_dim}), got {got}")
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[-1] != data_dim:
        raise PplGenError(
            f"x: each row must have {data_dim} values (data_dim of this {owner}), "
            f"got shape {tuple(x.shape)}"
        )
    return flat
