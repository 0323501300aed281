"""Latent-variable models written the way a Pyro user writes them, for the any-model tests.

Each factory takes the :class:`~ppl_gen.data.datasets.DataSplits` and returns a fresh model
``model(x, indices=None, size=None)``: fixed ``pyro.param`` / ``pyro.module`` names, any
``pyro.distributions`` likelihood, per-datapoint sites inside ``ppl_gen.data_plate``.  None
of them has the attributes of ppl_gen's declared models (``latent_shapes``, ``data_dim``).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroSample
from torch import nn

import ppl_gen

HIDDEN = 32


def _net(n_in: int, n_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(n_in, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, n_out))


def bernoulli_vae(data):
    """A plain function with ``pyro.module("decoder", net)`` and a Bernoulli likelihood."""
    decoder = _net(2, data.data_dim)

    def model(x, indices=None, size=None):
        pyro.module("decoder", decoder)
        with ppl_gen.data_plate(x, indices, size):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    return model


class PyroModuleVAE(PyroModule):
    """A ``PyroModule`` whose prior is a ``PyroSample`` attribute-free call."""

    def __init__(self, data_dim: int, latent: int = 2) -> None:
        super().__init__()
        self.latent = latent
        self.decoder = _net(latent, data_dim)
        self.bias = nn.Parameter(torch.zeros(data_dim))

    def forward(self, x, indices=None, size=None):
        with ppl_gen.data_plate(x, indices, size):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent), 1.0).to_event(1))
            logits = self.decoder(z) + self.bias
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)


def pyro_module_vae(data):
    return PyroModuleVAE(data.data_dim)


def two_layer_vae(data):
    """z2 -> z1 -> x (Burda et al. 2016, two stochastic layers)."""
    top, bottom = _net(2, 2 * 4), _net(4, data.data_dim)

    def model(x, indices=None, size=None):
        pyro.module("top", top)
        pyro.module("bottom", bottom)
        with ppl_gen.data_plate(x, indices, size):
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            loc, raw = top(z2).chunk(2, -1)
            z1 = pyro.sample("z1", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=bottom(z1)).to_event(1), obs=x)

    return model


def three_layer_vae(data):
    """z3 -> z2 -> z1 -> x."""
    nets = nn.ModuleList([_net(2, 6), _net(3, 8), _net(4, data.data_dim)])

    def model(x, indices=None, size=None):
        pyro.module("ladder", nets)
        with ppl_gen.data_plate(x, indices, size):
            z = pyro.sample("z3", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            for name, net in zip(("z2", "z1"), nets[:2], strict=True):
                loc, raw = net(z).chunk(2, -1)
                scale = nn.functional.softplus(raw) + 1e-3
                z = pyro.sample(name, dist.Normal(loc, scale).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=nets[2](z)).to_event(1), obs=x)

    return model


def poisson_vae(data):
    """Counts (pixel intensities) with a Poisson likelihood."""
    decoder = _net(2, data.data_dim)

    def model(x, indices=None, size=None):
        pyro.module("decoder", decoder)
        with ppl_gen.data_plate(x, indices, size):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            rate = nn.functional.softplus(decoder(z)) + 1e-4
            pyro.sample("x", dist.Poisson(rate).to_event(1), obs=x)

    return model


def negative_binomial_vae(data):
    """Over-dispersed counts; the dispersion is a ``pyro.param`` under a fixed name."""
    decoder = _net(2, data.data_dim)

    def model(x, indices=None, size=None):
        pyro.module("decoder", decoder)
        total = pyro.param(
            "total_count",
            lambda: x.new_full((data.data_dim,), 5.0),
            constraint=constraints.positive,
        )
        with ppl_gen.data_plate(x, indices, size):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            logits = decoder(z)
            pyro.sample("x", dist.NegativeBinomial(total, logits=logits).to_event(1), obs=x)

    return model


def positive_latent(data):
    """A LogNormal (positive) latent: non-negative factor loadings, Gaussian pixels."""
    weight = nn.Linear(3, data.data_dim)

    def model(x, indices=None, size=None):
        pyro.module("loadings", weight)
        noise = pyro.param("noise", lambda: x.new_tensor(1.0), constraint=constraints.positive)
        with ppl_gen.data_plate(x, indices, size):
            z = pyro.sample("z", dist.LogNormal(x.new_zeros(3), 0.5).to_event(1))
            pyro.sample("x", dist.Normal(weight(z), noise).to_event(1), obs=x)

    return model


def mixture_latent(data):
    """A categorical cluster beside a continuous code: c -> z -> x (enumerated c)."""
    decoder = _net(2, data.data_dim)
    k = 3

    def model(x, indices=None, size=None):
        pyro.module("decoder", decoder)
        means = pyro.param("cluster_means", lambda: torch.randn(k, 2, device=x.device))
        with ppl_gen.data_plate(x, indices, size):
            c = pyro.sample("c", dist.Categorical(logits=x.new_zeros(k)))
            z = pyro.sample("z", dist.Normal(means[c], 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    return model


def dirichlet_latent(data):
    """Topic-style proportions theta ~ Dirichlet on the simplex, Bernoulli pixels."""
    k = 4

    def model(x, indices=None, size=None):
        topics = pyro.param("topics", lambda: 0.1 * torch.randn(k, data.data_dim, device=x.device))
        with ppl_gen.data_plate(x, indices, size):
            theta = pyro.sample("theta", dist.Dirichlet(x.new_ones(k)))
            pyro.sample("x", dist.Bernoulli(logits=theta @ topics).to_event(1), obs=x)

    return model


#: name -> (factory, binarize mode of the data it is meant for)
ZOO = {
    "bernoulli_vae": (bernoulli_vae, "dynamic"),
    "pyro_module_vae": (pyro_module_vae, "static"),
    "two_layer_vae": (two_layer_vae, "dynamic"),
    "three_layer_vae": (three_layer_vae, "static"),
    "poisson_vae": (poisson_vae, "counts"),
    "negative_binomial_vae": (negative_binomial_vae, "counts"),
    "positive_latent": (positive_latent, "none"),
    "mixture_latent": (mixture_latent, "static"),
    "dirichlet_latent": (dirichlet_latent, "static"),
}

# PyroSample is re-exported for users who write priors as module attributes.
__all__ = ["ZOO", "PyroSample"]
