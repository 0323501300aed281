"""Importance-weighted training objectives (IWAE-K) and their gradient estimators.

For a minibatch ``x_b`` (``b`` in a subsample ``B`` of the ``N`` training rows) the log
importance weights ``log w_bk = log p(x_b, z_bk) - log q(z_bk | x_b)``, ``z_bk ~ q``,
``k = 1..K``, are taken unscaled per datapoint from
:func:`ppl_gen.infer.bounds.log_importance_weights`, and the objective of the whole
training set is estimated by

* ``iwae``: ``(N / |B|) sum_b [logsumexp_k log w_bk - log K]`` (Burda et al. 2016, eq. 8),
* ``elbo``: ``(N / |B|) sum_b mean_k log w_bk`` (Kingma & Welling 2014, eq. 8).

The subsampling scale ``N / |B|`` multiplies each datapoint's bound *after* the
log-sum-exp over its own K samples, so the minibatch estimate is unbiased for the sum of
the per-datapoint bounds.  Pyro's ``RenyiELBO`` applies the scale inside the log-sum-exp
of the summed-over-data weights (Pyro issues #2220, #3104), which is neither.

Gradient estimators (``estimator``), all needing reparameterised guide samples
(``z = g(eps; phi)``, ``has_rsample``):

* ``reparam``: the gradient of the objective above (Kingma & Welling 2014; Burda et al.
  2016 eq. 14).
* ``stl``, *sticking the landing* (Roeder et al. 2017, eq. 8; its IWAE form in Tucker et
  al. 2019, sec. 2): the guide's parameters are stopped in ``log q`` so that only the path
  derivative ``d log w / dz * dz / dphi`` remains; the score term
  ``- d log q(z; phi) / dphi`` (zero mean, large variance near the posterior) is dropped.
  Implemented for any guide: ``log q`` is evaluated a second time at the *detached*
  samples (the guide rerun under ``poutine.condition``), whose gradient is exactly the score
  term, and added back, so structured guides (a latent conditioned on another) get the
  full path derivative.
* ``dreg``, doubly reparameterised (Tucker et al. 2019, eq. 5-7), IWAE only: the guide's
  parameters get ``sum_k wtilde_k^2 * path derivative of log w_k`` with
  ``wtilde_k = w_k / sum_j w_j`` (eq. 7), every other parameter (the model's: decoder,
  prior) the ordinary IWAE gradient ``sum_k wtilde_k d log w_k / dtheta``.  The two
  gradients are computed with ``torch.autograd.grad`` and returned as a surrogate whose
  value is the IWAE loss and whose gradient is theirs.  A parameter the guide touches is
  treated as an encoder parameter.

The loss objects follow Pyro's ELBO interface (``differentiable_loss(model, guide, x,
indices)``, ``loss``), so :class:`~ppl_gen.infer.training.SVITask` uses them unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.poutine.subsample_messenger import _Subsample

from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.infer.bounds import (
    PARTICLE_PLATE,
    _max_plate_nesting,
    _site_log_prob,
    log_importance_weights,
)
from ppl_gen.infer.elbos import make_elbo
from ppl_gen.infer.enumeration import enumerated_sites
from ppl_gen.lvm.plates import DATA_PLATE

OBJECTIVES = ("elbo", "iwae")
ESTIMATORS = ("reparam", "stl", "dreg")


def check_objective(
    objective: str,
    k: int,
    estimator: str,
    elbo: str = "analytic-kl",
    num_particles: int = 1,
) -> None:
    """Validate a training objective and estimator (the ``TrainConfig`` fields).

    Raises:
        PplGenError: naming the first bad field: an unknown ``objective`` or ``estimator``,
            ``k`` not a positive integer, ``k > 1`` with the ELBO (its samples are
            ``num_particles``), ``num_particles > 1`` with IWAE (its samples are ``k``),
            ``dreg`` without IWAE, or an ``elbo`` flavour (``jit*``, ``enum``) that only
            Pyro's own ELBOs provide.
    """
    if objective not in OBJECTIVES:
        raise PplGenError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if estimator not in ESTIMATORS:
        raise PplGenError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    require_positive_int("k", k)
    if objective == "elbo" and k != 1:
        raise PplGenError(
            f"k applies to objective 'iwae' (the ELBO's samples are num_particles), got k={k} "
            "with objective 'elbo'"
        )
    if objective == "iwae" and num_particles != 1:
        raise PplGenError(
            f"num_particles must be 1 with objective 'iwae' (its K samples are k), "
            f"got {num_particles}"
        )
    if estimator == "dreg" and objective != "iwae":
        raise PplGenError("estimator 'dreg' needs objective 'iwae' (Tucker et al. 2019)")
    if (objective, estimator) != ("elbo", "reparam") and (elbo.startswith("jit") or elbo == "enum"):
        raise PplGenError(
            f"elbo {elbo!r} is one of Pyro's ELBOs and does not combine with objective "
            f"{objective!r} / estimator {estimator!r}; use trace or analytic-kl"
        )


@dataclass
class _Terms:
    """One minibatch's log-weights and what the estimators need from its traces."""

    log_weights: torch.Tensor  # (K, batch); for stl/dreg its phi-gradient is the path term
    scale: float  # N / batch
    guide_params: list[torch.Tensor]
    model_params: list[torch.Tensor]


class _Recorded:
    """A model or guide that keeps the trace of its last run and passes ``size`` on only
    when given (so ``functools.partial(model, size=N)`` keeps its ``N``)."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self.trace = None

    def __call__(self, x, indices=None, size=None):
        kwargs = {"indices": indices} if size is None else {"indices": indices, "size": size}
        with poutine.trace() as tracer:
            out = self.fn(x, **kwargs)
        self.trace = tracer.trace
        return out


def _params(trace) -> list[torch.Tensor]:
    out, seen = [], set()
    for site in trace.nodes.values():
        if site["type"] == "param":
            p = site["value"].unconstrained()
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def _guide_sites(trace) -> list[str]:
    return [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and not isinstance(site["fn"], _Subsample)
    ]


def _subsample_scale(trace) -> float:
    """``N / batch`` of the data plate, read from the model's observed sites."""
    for site in trace.nodes.values():
        if site["type"] == "sample" and site["is_observed"]:
            for frame in site["cond_indep_stack"]:
                if frame.name == DATA_PLATE:
                    return (frame.full_size or frame.size) / frame.size
    raise PplGenError(
        f"model: no observed site inside pyro.plate({DATA_PLATE!r}); the importance-weighted "
        "objectives need the data plate convention (ppl_gen.lvm.plates)"
    )


class ImportanceWeightedObjective:
    """The ELBO or IWAE-K training loss with a chosen gradient estimator (module docs).

    Args:
        objective: ``iwae`` (``k`` samples per datapoint) or ``elbo`` (Monte Carlo ELBO of
            ``k`` samples; with ``stl`` this is Roeder et al.'s STL ELBO).
        k: K, samples per datapoint (>= 1).
        estimator: ``reparam``, ``stl`` or ``dreg`` (``dreg`` with ``iwae`` only).
        max_plate_nesting: plate dims the model and guide use; found by a trace on the
            first call (then kept, as Pyro's ELBOs do) when ``None``.

    Raises:
        PplGenError: a bad argument (see :func:`check_objective`; with ``objective='elbo'``
            any ``k`` is accepted here).
    """

    def __init__(
        self,
        objective: str = "iwae",
        k: int = 1,
        estimator: str = "reparam",
        *,
        max_plate_nesting: int | None = None,
    ) -> None:
        check_objective(objective, k if objective == "iwae" else 1, estimator)
        require_positive_int("k", k)
        self.objective, self.k, self.estimator = objective, k, estimator
        self.max_plate_nesting = max_plate_nesting
        self.summed: tuple[str, ...] | None = None  # discrete sites summed out exactly

    def _terms(self, model, guide, x, indices, size) -> _Terms:
        model_rec, guide_rec = _Recorded(model), _Recorded(guide)
        first = None if indices is None else indices[:1]
        if self.max_plate_nesting is None:  # the order evaluate_bounds uses (same draws)
            self.max_plate_nesting = _max_plate_nesting(
                model_rec, guide_rec, (x[:1],), {"indices": first, "size": size}
            )
        if self.summed is None:
            self.summed = enumerated_sites(model_rec, guide_rec, x[:1], first, size)
        lw = log_importance_weights(
            model_rec, guide_rec, x, self.k, indices, size, self.max_plate_nesting, self.summed
        )
        names = _guide_sites(guide_rec.trace)
        drawn = [n for n in _guide_sites(model_rec.trace) if n not in names]
        for name in names + drawn:
            fn = (guide_rec if name in names else model_rec).trace.nodes[name]["fn"]
            if name not in self.summed and not fn.has_rsample:
                raise PplGenError(
                    f"estimator {self.estimator!r} with objective {self.objective!r} needs "
                    f"reparameterised samples; site {name!r} ({type(fn).__name__}) has no "
                    "rsample"
                )
        if self.estimator != "reparam" and names:
            lw = lw + self._score_term(guide, guide_rec.trace, names, x, indices, size)
        guide_params = _params(guide_rec.trace)
        in_guide = {id(p) for p in guide_params}
        model_params = [p for p in _params(model_rec.trace) if id(p) not in in_guide]
        return _Terms(lw, _subsample_scale(model_rec.trace), guide_params, model_params)

    def _score_term(self, guide, trace, names, x, indices, size) -> torch.Tensor:
        """``L - L.detach()`` with ``L = log q(stop(z) | x; phi)`` ``(K, batch)``: zero, with
        the score-term gradient ``d log q / dphi`` at fixed ``z`` (module docs)."""
        data = {
            name: site["value"].detach()
            for name, site in trace.nodes.items()
            if site["type"] == "sample" and not isinstance(site["fn"], _Subsample)
        }
        particle_dim = -(self.max_plate_nesting + 1)
        rerun = _Recorded(poutine.condition(guide, data=data))
        with pyro.plate(PARTICLE_PLATE, self.k, dim=particle_dim):
            rerun(x, indices, size)
        nodes = rerun.trace.nodes
        log_q = sum(_site_log_prob(n, nodes[n], particle_dim) for n in names)
        return log_q - log_q.detach()

    def _reduce(self, lw: torch.Tensor) -> torch.Tensor:
        if self.objective == "iwae":
            return torch.logsumexp(lw, dim=0) - math.log(self.k)
        return lw.mean(0)

    def per_datapoint(
        self,
        model: Callable,
        guide: Callable,
        x: torch.Tensor,
        indices: torch.Tensor | None = None,
        size: int | None = None,
    ) -> torch.Tensor:
        """Unscaled per-datapoint objective, IWAE-K_b or ELBO_b (nats), differentiable.

        Args:
            model, guide: Pyro callables following the data plate convention.
            x: ``(batch, ...)`` datapoints; ``indices``: ``(batch,)`` their rows; ``size``:
                the dataset size (left to the callables when ``None``).

        Returns:
            ``(batch,)``; its gradient is the ``reparam`` or (``stl``, ``dreg``) the STL
            estimator's (DReG's reweighting is applied by :meth:`differentiable_loss`).
        """
        return self._reduce(self._terms(model, guide, x, indices, size).log_weights)

    def differentiable_loss(
        self,
        model: Callable,
        guide: Callable,
        x: torch.Tensor,
        indices: torch.Tensor | None = None,
        size: int | None = None,
    ) -> torch.Tensor:
        """Minus the objective of the whole training set estimated from the minibatch,
        ``-(N / batch) sum_b objective_b`` (nats), a scalar whose gradient is the chosen
        estimator's (module docs).

        Raises:
            PplGenError: a guide site without ``rsample``, or no observed site in the
                data plate.
        """
        terms = self._terms(model, guide, x, indices, size)
        loss = -terms.scale * self._reduce(terms.log_weights).sum()
        if self.estimator != "dreg":
            return loss
        lw = terms.log_weights
        wtilde = torch.softmax(lw.detach(), dim=0)
        encoder_loss = -terms.scale * (wtilde.square() * lw).sum()
        grads = []
        if terms.model_params:
            grads += torch.autograd.grad(
                loss, terms.model_params, retain_graph=True, allow_unused=True
            )
        if terms.guide_params:
            grads += torch.autograd.grad(encoder_loss, terms.guide_params, allow_unused=True)
        surrogate = loss.detach()
        for p, g in zip(terms.model_params + terms.guide_params, grads, strict=True):
            if g is not None:
                term = (g.detach() * p).sum()
                surrogate = surrogate + (term - term.detach())
        return surrogate

    def loss(self, model: Callable, guide: Callable, x: torch.Tensor, indices=None, size=None):
        """:meth:`differentiable_loss` as a float (nats), no gradient."""
        with torch.no_grad():
            terms = self._terms(model, guide, x, indices, size)
            return float(-terms.scale * self._reduce(terms.log_weights).sum())


def make_objective(config) -> object:
    """The loss object a :class:`~ppl_gen.infer.training.TrainConfig` trains with: Pyro's
    ELBO (:func:`~ppl_gen.infer.elbos.make_elbo`) for ``objective='elbo'`` with ``reparam``,
    else an :class:`ImportanceWeightedObjective` (``elbo`` + ``stl`` uses
    ``num_particles`` samples, ``iwae`` uses ``k``)."""
    objective = getattr(config, "objective", "elbo")
    estimator = getattr(config, "estimator", "reparam")
    if (objective, estimator) == ("elbo", "reparam"):
        return make_elbo(config.elbo, config.num_particles)
    k = config.k if objective == "iwae" else config.num_particles
    return ImportanceWeightedObjective(objective, k, estimator)
