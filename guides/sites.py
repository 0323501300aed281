"""Describe the per-datapoint latent sites of any Pyro model, so guides can be built from it.

:func:`latent_sites` traces a model ``model(x, indices=None, size=None)`` once and returns,
for every unobserved sample site inside the data plate (:mod:`ppl_gen.lvm.plates`), a
:class:`LatentSite`: its event shape, its support, the bijection
``torch.distributions.biject_to(support)`` from unconstrained real space onto that support
(positive, interval, simplex, ordered, correlation-Cholesky, ...), the unconstrained event
shape, whether it is discrete, and the latent sites it depends on in the model.

Guides put a base distribution over the *unconstrained* event and push it through the
site's bijection (:func:`site_distribution`), so ``log q(z) = log q_base(u) - log|dz/du|``
includes the log-Jacobian, as Pyro's ``AutoNormal`` does.  Discrete sites (finite support)
are not sampled by the guides: training and the bounds sum them out by enumeration.
:class:`SitesTransform` is the same bijection for several sites at once, on the
concatenation of their unconstrained values (for the joint guides: full-rank, IAF).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer.inspect import get_dependencies
from pyro.poutine.subsample_messenger import _Subsample
from torch.distributions import biject_to, constraints
from torch.distributions.transforms import Transform

from ppl_gen.core.errors import PplGenError
from ppl_gen.lvm.plates import DATA_PLATE

__all__ = [
    "LatentSite",
    "SitesTransform",
    "continuous_sites",
    "latent_sites",
    "local_latent_shapes",
    "model_sites",
    "real_site",
    "site_distribution",
]


def _is_real(support) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


@dataclass(frozen=True)
class LatentSite:
    """One per-datapoint latent sample site of a model.

    Attributes:
        name: the site's name in the model.
        event_shape: per-datapoint event shape of the site's value.
        support: the constraint its values satisfy (``site["fn"].support``).
        transform: ``biject_to(support)``, unconstrained -> constrained (``None`` if
            ``discrete``).
        unconstrained_shape: ``transform.inverse_shape(event_shape)``: e.g. ``(K - 1,)``
            for a ``K``-simplex; equal to ``event_shape`` for discrete sites.
        discrete: ``True`` for finite support (enumerated, never sampled by the guides).
        parents: names of the latent sites it depends on in the model, in model order.
    """

    name: str
    event_shape: tuple[int, ...]
    support: object
    transform: Transform | None
    unconstrained_shape: tuple[int, ...]
    discrete: bool
    parents: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The name usable as an ``nn.ModuleDict`` / ``nn.ParameterDict`` key (no dots)."""
        return self.name.replace(".", "_")

    @property
    def is_real(self) -> bool:
        """``True`` if the support is all of real space (the transform is the identity)."""
        return not self.discrete and _is_real(self.support)

    @property
    def unconstrained_numel(self) -> int:
        """Number of unconstrained values per datapoint."""
        return math.prod(self.unconstrained_shape)


def real_site(name: str, event_shape: tuple[int, ...], parents: tuple[str, ...] = ()) -> LatentSite:
    """A real-valued :class:`LatentSite` (for declared models' ``latent_shapes``)."""
    support = constraints.independent(constraints.real, len(event_shape))
    shape = tuple(event_shape)
    return LatentSite(name, shape, support, biject_to(support), shape, False, parents)


def _latent_nodes(trace) -> list[tuple[str, dict]]:
    out = []
    for name, site in trace.nodes.items():
        if (
            site["type"] != "sample"
            or site["is_observed"]
            or site["infer"].get("is_auxiliary")
            or isinstance(site["fn"], _Subsample)  # the plate's own index site
        ):
            continue
        out.append((name, site))
    return out


def _parents(model, args, kwargs, names: list[str]) -> dict[str, tuple[str, ...]]:
    """Latent parents of each site from ``pyro.infer.inspect.get_dependencies``; if the
    model cannot be traced with provenance, every earlier latent site (trace order)."""
    try:
        deps = get_dependencies(model, args, kwargs)["prior_dependencies"]
        return {n: tuple(p for p in names if p != n and p in deps[n]) for n in names}
    except Exception:  # noqa: BLE001 - provenance tracking fails on some tensor ops
        return {n: tuple(names[: names.index(n)]) for n in names}


def latent_sites(
    model: Callable, x: torch.Tensor, indices=None, size=None
) -> dict[str, LatentSite]:
    """The model's per-datapoint latent sites, from one trace of ``model(x, indices, size)``.

    The trace runs with Pyro's validation off, gradients off and every effect blocked from
    outer handlers, so discovery cannot fail on data the likelihood's support does not
    contain (e.g. grey levels given to a Bernoulli).

    Args:
        model: a Pyro callable following the data plate convention.
        x: ``(batch, ...)`` datapoints; ``indices: (batch,)``, ``size``: as for the model.

    Returns:
        ``{name: LatentSite}`` in the order the model samples them.

    Raises:
        PplGenError: naming the site, if a latent site lies outside ``pyro.plate("data")``,
            has a continuous support ``biject_to`` cannot map from real space, or is
            discrete without enumerable support (e.g. Poisson); or if there are no latent
            sites at all.
    """
    kwargs = {"indices": indices, "size": size}
    with torch.no_grad(), poutine.block(), pyro.validation_enabled(False):
        trace = poutine.trace(model).get_trace(x, **kwargs)
        nodes = _latent_nodes(trace)
        parents = _parents(model, (x,), kwargs, [n for n, _ in nodes]) if len(nodes) > 1 else {}
    sites = {}
    for name, site in nodes:
        if not any(f.name == DATA_PLATE for f in site["cond_indep_stack"]):
            raise PplGenError(
                f"model: latent site {name!r} is outside pyro.plate({DATA_PLATE!r}); "
                "per-datapoint guides need every latent variable inside the data plate"
            )
        fn = site["fn"]
        support, shape = fn.support, tuple(fn.event_shape)
        if support.is_discrete:
            if not fn.has_enumerate_support:
                inner = fn
                while isinstance(inner, (dist.Independent, dist.MaskedDistribution)):
                    inner = inner.base_dist
                wrapped = " wrapped by .to_event()" if inner is not fn else ""
                raise PplGenError(
                    f"model: latent site {name!r} is discrete ({type(inner).__name__}{wrapped}) "
                    "without finite enumerable support; discrete latents must be enumerable "
                    "(Bernoulli, Categorical, OneHotCategorical, ... without .to_event) to "
                    "be summed out"
                )
            transform, free = None, shape
        else:
            try:
                transform = biject_to(support)
                free = tuple(transform.inverse_shape(shape))
            except (NotImplementedError, ValueError) as err:
                raise PplGenError(
                    f"model: latent site {name!r} has support {support}, which "
                    "torch.distributions.biject_to cannot map from real space; guides need "
                    "a real, positive, interval, simplex or other biject_to-able support "
                    f"({err})"
                ) from None
        sites[name] = LatentSite(
            name, shape, support, transform, free, support.is_discrete, parents.get(name, ())
        )
    if not sites:
        raise PplGenError("model: no latent sample sites found inside the data plate")
    return sites


def continuous_sites(sites: dict[str, LatentSite]) -> dict[str, LatentSite]:
    """The sites guides sample (discrete ones are enumerated instead)."""
    return {name: s for name, s in sites.items() if not s.discrete}


def local_latent_shapes(
    model: Callable, x: torch.Tensor, indices=None, size=None
) -> dict[str, tuple[int, ...]]:
    """Per-datapoint event shapes of the model's continuous latent sites.

    Declared models report ``model.latent_shapes`` directly; any other Pyro model is traced
    once (:func:`latent_sites`).

    Returns:
        ``{site_name: event_shape}`` in the order the model samples them (discrete sites
        left out).

    Raises:
        PplGenError: as :func:`latent_sites`.
    """
    shapes = getattr(model, "latent_shapes", None)
    if shapes is not None:
        return dict(shapes)
    sites = continuous_sites(latent_sites(model, x, indices, size))
    return {name: s.event_shape for name, s in sites.items()}


def model_sites(
    model: Callable, x: torch.Tensor | None, indices=None, size=None
) -> dict[str, LatentSite]:
    """Continuous latent sites of a model: from ``model.latent_shapes`` for declared models
    (real-valued), else from a trace (:func:`latent_sites`)."""
    shapes = getattr(model, "latent_shapes", None)
    if shapes is not None:
        return {name: real_site(name, tuple(shape)) for name, shape in shapes.items()}
    return continuous_sites(latent_sites(model, x, indices, size))


def site_distribution(site: LatentSite, base: dist.TorchDistribution) -> dist.TorchDistribution:
    """The guide's distribution of ``site`` from a ``base`` over its unconstrained event.

    Args:
        site: a continuous :class:`LatentSite`.
        base: distribution with event shape ``site.unconstrained_shape`` (e.g.
            ``Normal(loc, scale).to_event(len(site.unconstrained_shape))``).

    Returns:
        ``base`` itself for a real site; else ``TransformedDistribution(base,
        site.transform)`` (values on the support, log-density with the log-Jacobian; the
        transform caches its last input so ``log_prob`` of a sample is exact).
    """
    if site.is_real:
        return base
    return dist.TransformedDistribution(base, site.transform.with_cache(1))


class SitesTransform(Transform):
    """Bijection from the concatenated unconstrained values of several sites onto the
    concatenation of their (flattened) constrained values.

    ``u: (..., sum_j numel(unconstrained_j)) -> z: (..., sum_j numel(event_j))``; the
    log-Jacobian is the sum of the sites' (each reduced over its event dimensions).

    Args:
        sites: the continuous sites, in the order of the concatenation.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, sites: list[LatentSite], cache_size: int = 1) -> None:
        super().__init__(cache_size=cache_size)
        self.sites = list(sites)
        self.free_sizes = [s.unconstrained_numel for s in self.sites]
        self.sizes = [math.prod(s.event_shape) for s in self.sites]

    def with_cache(self, cache_size: int = 1) -> SitesTransform:
        return self if self._cache_size == cache_size else SitesTransform(self.sites, cache_size)

    def _pieces(self, u: torch.Tensor):
        for site, part in zip(self.sites, u.split(self.free_sizes, dim=-1), strict=True):
            yield site, part.reshape(*u.shape[:-1], *site.unconstrained_shape)

    def _call(self, u: torch.Tensor) -> torch.Tensor:
        out = [s.transform(p).reshape(*u.shape[:-1], -1) for s, p in self._pieces(u)]
        return torch.cat(out, dim=-1)

    def _inverse(self, z: torch.Tensor) -> torch.Tensor:
        out = []
        for site, part in zip(self.sites, z.split(self.sizes, dim=-1), strict=True):
            value = part.reshape(*z.shape[:-1], *site.event_shape)
            out.append(site.transform.inv(value).reshape(*z.shape[:-1], -1))
        return torch.cat(out, dim=-1)

    def log_abs_det_jacobian(self, u: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        total = u.new_zeros(u.shape[:-1])
        for site, part in self._pieces(u):
            if site.is_real:
                continue
            value = site.transform(part)
            ladj = site.transform.log_abs_det_jacobian(part, value)
            extra = ladj.dim() - (u.dim() - 1)  # event dims the transform did not reduce
            total = total + (ladj.sum(tuple(range(-extra, 0))) if extra > 0 else ladj)
        return total

    def forward_shape(self, shape):
        return (*shape[:-1], sum(self.sizes))

    def inverse_shape(self, shape):
        return (*shape[:-1], sum(self.free_sizes))

    def split(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{site name: value (..., *event_shape)}`` from a concatenated constrained ``z``."""
        parts = z.split(self.sizes, dim=-1)
        return {
            s.name: p.reshape(*z.shape[:-1], *s.event_shape)
            for s, p in zip(self.sites, parts, strict=True)
        }
