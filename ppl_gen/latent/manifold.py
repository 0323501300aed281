"""The 2-D latent manifold: decodings of an ``n x n`` grid of Gaussian quantiles
(Kingma & Welling 2014, fig. 4), for any decoder with a 2-D latent space."""

from __future__ import annotations

import torch

from ppl_gen.core.errors import PplGenError
from ppl_gen.latent.pairs import EncoderDecoder


def manifold_latents(
    n: int, lo: float = 0.05, hi: float = 0.95, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """The grid of codes ``(n * n, 2)``: row ``r``, column ``c`` is
    ``(Phi^-1(u_c), Phi^-1(u_{n-1-r}))`` with ``u`` evenly spaced on ``[lo, hi]`` (same
    order as :func:`ppl_gen.viz.report.latent_manifold_grid`: first coordinate to the right,
    second upwards).

    Raises:
        PplGenError: ``n < 2`` (``n``) or ``0 < lo < hi < 1`` violated.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise PplGenError(f"n must be an integer >= 2, got {n!r}")
    if not 0.0 < lo < hi < 1.0:
        raise PplGenError(f"lo and hi must satisfy 0 < lo < hi < 1, got {lo}, {hi}")
    u = torch.linspace(lo, hi, n, device=device)
    q = torch.distributions.Normal(torch.zeros((), device=device), 1.0).icdf(u)
    z2, z1 = torch.meshgrid(q.flip(0), q, indexing="ij")
    return torch.stack([z1, z2], dim=-1).reshape(n * n, 2)


def manifold(
    pair: EncoderDecoder, n: int = 20, *, label: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode the quantile grid of a 2-D latent space.

    Args:
        pair: an encoder/decoder pair with ``latent_dim == 2``.
        n: grid side.
        label: the class to condition on, for conditional pairs (``label``).

    Returns:
        ``(images (n * n, D), codes (n * n, 2))`` on CPU, row-major.

    Raises:
        PplGenError: naming ``latent_dim`` if the checkpoint's latent space is not 2-D.
    """
    if pair.latent_dim != 2:
        raise PplGenError(
            f"latent_dim mismatch: the manifold grid needs a 2-D latent space, the "
            f"checkpoint has {pair.latent_dim} (train with latent_dim 2)"
        )
    z = manifold_latents(n, device=pair.device)
    y = None if label is None else torch.full((n * n,), int(label), device=pair.device)
    return pair.decode_rows(z, y).cpu(), z.cpu()
