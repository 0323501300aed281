"""Declarative latent-variable models.

Declare a prior over ``z``, a decoder network and a likelihood family, and get a Pyro
``model(x, indices=None, size=None)``::

    model = LatentVariableModel(
        latent_dim=10,
        decoder=mlp(10, [256], 64),
        likelihood="bernoulli",
    )

which defines ``p(x, z) = p(z) p(x | decoder(z))`` for every row of ``x`` inside
``pyro.plate("data", size, subsample=indices)`` (see :mod:`ppl_gen.lvm.plates`).  The model
works with every guide in :mod:`ppl_gen.guides`, with SVI training
(:mod:`ppl_gen.infer.training`) and with the bounds (:mod:`ppl_gen.infer.bounds`), exactly as a
hand-written Pyro model following the same plate convention does.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import torch
from torch import nn

from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.core.naming import unique_scope
from ppl_gen.lvm.likelihoods import Likelihood, make_likelihood
from ppl_gen.lvm.plates import data_plate, flatten_rows
from ppl_gen.lvm.priors import make_prior


class LatentVariableModel(nn.Module):
    """``p(x, z) = p(z) prod_d p(x_d | decoder(z))`` with one latent site ``"z"``.

    Args:
        latent_dim: ``Z``, size of the latent code (>= 1).
        decoder: ``nn.Module`` mapping ``z: (..., Z)`` to the likelihood's parameters
            ``(..., D * likelihood.params_per_dim)``; must accept any leading batch dims.
        data_dim: ``D``, number of data dimensions (flattened).
        likelihood: family name (``bernoulli``, ``gaussian``, ``laplace``, ``student-t``,
            ``categorical``) or a :class:`~ppl_gen.lvm.likelihoods.Likelihood`.
        prior: ``"normal"``, ``"mog"`` or an ``nn.Module`` returning ``p(z)`` given ``x``.
        image_shape: shape used to display a row of ``x`` (``(D,)`` when not an image).

    Sites: ``"z"`` (latent, event ``(Z,)``) and ``"x"`` (observed, event ``(D,)``).

    Raises:
        PplGenError: if ``latent_dim`` or ``data_dim`` is not a positive integer, if the
            decoder's output width is not ``data_dim * params_per_dim`` of the likelihood
            (naming ``decoder``), or if ``likelihood_kwargs`` holds an option the likelihood
            does not take.
    """

    latent_site = "z"

    def __init__(
        self,
        latent_dim: int,
        decoder: nn.Module,
        data_dim: int,
        likelihood: str | Likelihood = "bernoulli",
        prior: str | nn.Module = "normal",
        image_shape: Sequence[int] | None = None,
        **likelihood_kwargs,
    ) -> None:
        super().__init__()
        self.latent_dim = require_positive_int("latent_dim", latent_dim)
        self.data_dim = require_positive_int("data_dim", data_dim)
        self.decoder = decoder
        self.likelihood = make_likelihood(likelihood, data_dim, **likelihood_kwargs)
        self.prior = make_prior(prior, latent_dim)
        self.image_shape = tuple(image_shape) if image_shape is not None else (data_dim,)
        self.scope = unique_scope(type(self).__name__)
        self._check_decoder_width()

    def _check_decoder_width(self) -> None:
        """Run the decoder on one code and compare its width with the likelihood's needs."""
        per_dim = self.likelihood.params_per_dim
        param = next(self.decoder.parameters(), None)
        like = param if param is not None else torch.zeros(())
        try:
            with torch.no_grad():
                out = self.decoder(like.new_zeros(1, self.latent_dim))
        except (RuntimeError, TypeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise PplGenError(
                f"decoder: cannot map a code of latent_dim {self.latent_dim} ({first[:120]})"
            ) from None
        need = self.data_dim * per_dim
        if not torch.is_tensor(out) or out.shape[-1] != need:
            got = out.shape[-1] if torch.is_tensor(out) and out.dim() else type(out).__name__
            raise PplGenError(
                f"decoder: outputs {got} values per code; the {type(self.likelihood).__name__} "
                f"likelihood needs data_dim x {per_dim} = {need}"
            )

    @property
    def latent_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-datapoint event shape of each latent site, ``{"z": (Z,)}``."""
        return {self.latent_site: (self.latent_dim,)}

    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, *image_shape) -> (N, D)``; see :func:`ppl_gen.lvm.plates.flatten_rows`."""
        return flatten_rows(x, self.data_dim, type(self).__name__)

    def forward(
        self, x: torch.Tensor, indices: torch.Tensor | None = None, size: int | None = None
    ) -> torch.Tensor:
        """The Pyro model. ``x: (batch, D)``; returns ``z: (..., batch, Z)``."""
        pyro.module(self.scope, self)
        flat = self.flatten(x)
        with data_plate(flat, indices, size):
            z = pyro.sample(self.latent_site, self.prior(flat))
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=flat)
        return z

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """Mean of ``p(x | z)`` for ``z: (n, Z)``, returns ``(n, D)``."""
        return self.likelihood.mean(self.decoder(z))

    @torch.no_grad()
    def sample_prior(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """``n`` codes from ``p(z)``, ``(n, Z)``, on ``like``'s device."""
        return self.prior(like).sample((n,))
