"""The 2-D latent manifold: decode a regular grid of prior quantiles (Kingma & Welling 2014).

Source: Kingma & Welling (2014), "Auto-Encoding Variational Bayes", ICLR, fig. 4: the 2-D
latent manifold drawn through the inverse Gaussian CDF of a regular grid on the unit
square.  :func:`latent_manifold_grid` computes the decoded images;
:func:`ppl_gen.viz.grids.save_manifold` draws them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ppl_gen.core.device import resolve_device
from ppl_gen.core.errors import PplGenError


def latent_manifold_grid(
    decode: Callable[[torch.Tensor], torch.Tensor],
    n: int = 20,
    *,
    device: str | torch.device = "cpu",
    lo: float = 0.05,
    hi: float = 0.95,
) -> torch.Tensor:
    """Decode an n x n grid of a 2-D latent space (Kingma & Welling 2014, fig. 4).

    Coordinates ``u_0 < ... < u_{n-1}`` are linearly spaced on ``[lo, hi]`` inside the unit
    square and mapped through the inverse CDF of the standard Gaussian
    (``torch.distributions.Normal(0, 1).icdf``), so the grid covers the prior's quantiles.

    Args:
        decode: maps latents ``(n*n, 2)`` on ``device`` to images ``(n*n, D)`` (or
            ``(n*n, *image_shape)``), e.g. the decoder's Bernoulli means.  Called once, under
            :func:`torch.no_grad`.
        n: grid side, an integer >= 2.
        device: where the latent grid is built (``"cpu"``, ``"cuda"``, ``"cuda:N"``,
            ``"auto"`` or a :class:`torch.device`).
        lo, hi: quantile range, ``0 < lo < hi < 1``.

    Returns:
        ``(n*n, D)`` decoded values, detached, on CPU, in row-major order: row ``r``,
        column ``c`` (index ``r*n + c``) decodes ``z = (icdf(u_c), icdf(u_{n-1-r}))``, so the
        first latent coordinate increases to the right and the second upwards.

    Raises:
        PplGenError: if ``n < 2``, ``lo``/``hi`` are out of range, ``device`` is invalid, or
            ``decode`` does not return ``n*n`` rows.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise PplGenError(
            f"n (grid side of the latent manifold) must be an integer >= 2, got {n!r}"
        )
    if not (0.0 < lo < hi < 1.0):
        raise PplGenError(f"lo and hi must satisfy 0 < lo < hi < 1, got lo={lo!r}, hi={hi!r}")
    dev = resolve_device(device)
    dtype = torch.get_default_dtype()
    u = torch.linspace(lo, hi, n, device=dev, dtype=dtype)
    std_normal = torch.distributions.Normal(
        torch.zeros((), device=dev, dtype=dtype), torch.ones((), device=dev, dtype=dtype)
    )
    q = std_normal.icdf(u)  # (n,) Gaussian quantiles, increasing
    z2, z1 = torch.meshgrid(q.flip(0), q, indexing="ij")  # z2[r, c] = q[n-1-r], z1[r, c] = q[c]
    z = torch.stack([z1, z2], dim=-1).reshape(n * n, 2)
    with torch.no_grad():
        out = decode(z)
    if not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != n * n:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PplGenError(f"decode must return {n * n} rows (one per latent point), got {got}")
    return out.detach().reshape(n * n, -1).to("cpu")


__all__ = ["latent_manifold_grid"]
