"""Attribute vectors: the mean code of examples with an attribute minus the mean code of
examples without it (Larsen et al. 2016, sec. 5; White 2016, sec. 2.3).  Adding multiples
of the vector to a code moves its decoding towards (or away from) the attribute.

Attributes of the digit data: ``class:K`` (the label is K) and ``thick`` / ``thin`` (stroke
thickness: total ink -- the sum of grey levels -- above / below the median of the examples
considered; a standard proxy for stroke width on MNIST).
"""

from __future__ import annotations

import re

import torch

from ppl_gen.core.errors import PplGenError
from ppl_gen.latent.pairs import check_latent

_CLASS = re.compile(r"^class:(-?\d+)$")


def stroke_thickness(x: torch.Tensor) -> torch.Tensor:
    """Total ink of each image, ``sum_d x_d`` (grey levels), ``(N, D) -> (N,)``."""
    return x.reshape(x.shape[0], -1).sum(-1)


def attribute_mask(
    attribute: str, x: torch.Tensor, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Which examples have ``attribute``.

    Args:
        attribute: ``class:K``, ``thick`` or ``thin``.
        x: ``(N, D)`` images in [0, 1].
        labels: ``(N,)`` int labels (needed for ``class:K``).

    Returns:
        ``(N,)`` bool mask.

    Raises:
        PplGenError: naming ``attribute`` for an unknown attribute or a class attribute
            without labels.
    """
    match = _CLASS.match(attribute.strip())
    if match:
        if labels is None:
            raise PplGenError(f"attribute {attribute}: the data have no labels")
        return labels.reshape(-1).to(x.device) == int(match.group(1))
    ink = stroke_thickness(x).double()
    median = ink.quantile(0.5) if ink.numel() else ink.new_zeros(())  # midpoint for even N
    if attribute == "thick":
        return ink > median
    if attribute == "thin":
        return ink < median
    raise PplGenError(f"attribute must be class:K, thick or thin, got {attribute!r}")


def attribute_vector(z: torch.Tensor, mask: torch.Tensor, name: str = "attribute") -> torch.Tensor:
    """``mean(z[mask]) - mean(z[~mask])``.

    Args:
        z: ``(N, Z)`` codes.
        mask: ``(N,)`` bool, which codes have the attribute.
        name: the attribute, for the error message.

    Returns:
        ``(Z,)`` attribute vector.

    Raises:
        PplGenError: naming ``attribute`` when there are no positive or no negative
            examples, or the shapes disagree.
    """
    mask = torch.as_tensor(mask, device=z.device).bool().reshape(-1)
    if z.dim() != 2 or mask.shape[0] != z.shape[0]:
        raise PplGenError(
            f"attribute {name}: need one mask entry per code, got {mask.shape[0]} for "
            f"codes of shape {tuple(z.shape)}"
        )
    pos = int(mask.sum())
    if pos == 0:
        raise PplGenError(f"attribute {name}: no positive examples among {z.shape[0]} points")
    if pos == z.shape[0]:
        raise PplGenError(f"attribute {name}: no negative examples among {z.shape[0]} points")
    return z[mask].mean(0) - z[~mask].mean(0)


def apply_attribute(z: torch.Tensor, vector: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """``z + alpha * vector`` for each ``alpha``: ``z: (N, Z)``, ``vector: (Z,)``,
    ``alphas: (A,)`` -> ``(N, A, Z)`` (each row of the result is one example's path)."""
    check_latent(vector, z.shape[-1], "attribute vector")
    alphas = torch.as_tensor(alphas, device=z.device, dtype=z.dtype).reshape(1, -1, 1)
    return z.unsqueeze(1) + alphas * vector.reshape(1, 1, -1)
