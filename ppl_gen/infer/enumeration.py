"""Discrete latents summed out exactly: which sites, and the ELBO that does it.

A discrete latent with finite support that the guide does not sample (a mixture component
beside a continuous code, a cluster assignment) is *enumerated*: training uses Pyro's
``TraceEnum_ELBO`` on the model wrapped by ``pyro.infer.config_enumerate`` (parallel
enumeration), which maximises the marginal bound ``E_q[log sum_c p(x, z, c) - log q(z | x)]``,
and :mod:`ppl_gen.infer.bounds` sums the same sites out of every importance weight, so the
reported ELBO and IWAE-K are the bounds that were trained.

Enumeration is exact only for a site that sits at the level of the ``"data"`` plate (one
value per datapoint); a discrete site inside a nested plate (one per pixel, say), or one
without finite support (Poisson, geometric), is refused before anything trains.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO, config_enumerate
from pyro.poutine.subsample_messenger import _Subsample

from ppl_gen.core.errors import PplGenError
from ppl_gen.lvm.plates import DATA_PLATE


def _latent_nodes(trace) -> dict:
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and not site["infer"].get("is_auxiliary")
        and not isinstance(site["fn"], _Subsample)
    }


def _is_discrete(site: dict) -> bool:
    support = site["fn"].support
    return bool(getattr(support, "is_discrete", False))


def enumerated_sites(
    model: Callable,
    guide: Callable | None,
    x: torch.Tensor,
    indices: torch.Tensor | None = None,
    size: int | None = None,
) -> tuple[str, ...]:
    """The model's discrete latent sites that ``guide`` does not sample (to be summed out).

    Models that declare their discrete latent themselves (``model.discrete``, the GMM) keep
    their own handling and report ``()`` here.

    Raises:
        PplGenError: naming the site, for a discrete latent that cannot be enumerated
            (no finite support, or inside a plate nested in the data plate).
    """
    if getattr(model, "discrete", False):
        return ()
    kwargs = {"indices": indices, "size": size}
    # The look-ahead trace must not move the random streams training and bounds draw from.
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad(), poutine.block():
        sampled = set()
        if guide is not None:
            guide_trace = poutine.trace(guide).get_trace(x, **kwargs)
            sampled = set(_latent_nodes(guide_trace))
        model_trace = poutine.trace(model).get_trace(x, **kwargs)
    names = []
    for name, site in _latent_nodes(model_trace).items():
        if name in sampled or not _is_discrete(site):
            continue
        if not site["fn"].has_enumerate_support:
            raise PplGenError(
                f"model: discrete latent site {name!r} ({type(site['fn']).__name__}) has no "
                "finite support to sum out; give it a guide or use a finite distribution "
                "(Categorical, Bernoulli, ...)"
            )
        plates = [f.name for f in site["cond_indep_stack"] if f.vectorized]
        if plates != [DATA_PLATE]:
            raise PplGenError(
                f"model: discrete latent site {name!r} lies in plates {plates}; it can be "
                f"summed out only at the level of pyro.plate({DATA_PLATE!r}) (one value per "
                "datapoint)"
            )
        names.append(name)
    return tuple(names)


def enumerating(model: Callable) -> Callable:
    """``model`` with every discrete site marked for parallel enumeration."""
    return config_enumerate(model, default="parallel")


def enum_elbo(max_plate_nesting: int, num_particles: int = 1) -> TraceEnum_ELBO:
    """``TraceEnum_ELBO`` for a model whose plates nest ``max_plate_nesting`` deep."""
    return TraceEnum_ELBO(
        max_plate_nesting=max_plate_nesting,
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
    )
