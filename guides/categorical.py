"""Guides over a discrete latent assignment ``c`` (e.g. the mixture component of a GMM).

* :class:`AmortisedCategoricalGuide` -- ``q(c | x; phi) = Categorical(softmax(f_phi(x)))``,
  an encoder network shared by all datapoints (the categorical encoder of the amortised
  scheme).
* :class:`LocalCategoricalGuide` -- free logits per datapoint, ``q^(i)(c)``, e.g. started
  at the encoder's output and refined (semi-amortised inference, Kim et al. 2018).

Both mark ``c`` with ``infer={"enumerate": "parallel"}``, so ``TraceEnum_ELBO`` sums over
the K values exactly instead of sampling (no score-function variance); outside enumeration
(e.g. in :func:`ppl_gen.infer.bounds.evaluate_bounds`) ``c`` is sampled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_gen.core.errors import require_positive_int
from ppl_gen.core.naming import unique_scope
from ppl_gen.lvm.nets import mlp
from ppl_gen.lvm.plates import data_plate


def _sample(model: Callable, x: torch.Tensor, logits: torch.Tensor, indices, size):
    with data_plate(x, indices, size):
        return pyro.sample(
            model.latent_site,
            dist.Categorical(logits=logits),
            infer={"enumerate": "parallel"},
        )


class AmortisedCategoricalGuide(nn.Module):
    """``q(c | x; phi)``: an MLP encoder ``D -> hidden... -> K`` logits.

    Args:
        model: the mixture model (needs ``data_dim``, ``n_components``, ``latent_site``).
        hidden: hidden widths of the encoder.
    """

    def __init__(self, model: Callable, hidden: Sequence[int] = (64,)) -> None:
        super().__init__()
        self.model = [model]
        self.scope = unique_scope(type(self).__name__)
        self.encoder = mlp(model.data_dim, tuple(hidden), model.n_components)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder logits ``(batch, K)``."""
        return self.encoder(x.reshape(x.shape[0], -1))

    def forward(self, x: torch.Tensor, indices=None, size=None) -> torch.Tensor:
        pyro.module(self.scope, self)
        return _sample(self.model[0], x, self.logits(x), indices, size)


class LocalCategoricalGuide(nn.Module):
    """``q^(i)(c) = Categorical(softmax(l_i))`` with a free logit vector per datapoint.

    Args:
        model: the mixture model.
        num_data: ``N``, rows the guide holds.
        init_logits: optional ``(N, K)`` starting logits (e.g. an encoder's output).
    """

    is_local = True

    def __init__(
        self, model: Callable, num_data: int, init_logits: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.model = [model]
        self.num_data = require_positive_int("num_data", num_data)
        self.scope = unique_scope(type(self).__name__)
        if init_logits is None:
            init_logits = torch.zeros(num_data, model.n_components)
        self.table = nn.Parameter(init_logits.detach().clone())

    def logits(self, indices: torch.Tensor) -> torch.Tensor:
        """Logits of rows ``indices``, ``(batch, K)``."""
        return self.table[indices]

    def forward(self, x: torch.Tensor, indices=None, size=None) -> torch.Tensor:
        if indices is None:
            indices = torch.arange(x.shape[0], device=x.device)
        pyro.module(self.scope, self)
        return _sample(self.model[0], x, self.logits(indices), indices, self.num_data)
