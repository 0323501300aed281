"""Shared pieces of the inference schemes: settings, results, helpers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ppl_gen.core.distributed import DistributedContext
from ppl_gen.infer.bounds import BoundEstimate, evaluate_bounds
from ppl_gen.infer.param_stores import FitStore
from ppl_gen.infer.training import TrainConfig, TrainResult
from ppl_gen.lvm.tractable import FitHistory


@dataclass
class SchemeSettings:
    """Knobs shared by the inference schemes (one object for a whole comparison).

    Attributes:
        epochs, batch_size, lr, elbo: SVI training (svi-local, amortised, semi-amortised).
        objective, k, estimator: the SVI training objective (:mod:`ppl_gen.infer.objectives`).
        hidden: encoder hidden widths of amortised guides.
        iwae_k: K of the test IWAE-K bound.
        test_refit_steps: Adam steps fitting per-datapoint test posteriors (svi-local).
        local_steps: Adam steps on the per-datapoint q of each minibatch, model frozen
            between them, per joint step (mean-field / svi-local SVI; see TrainConfig).
        em_max_iter, em_tol, n_init: EM / mean-field iterations, relative-change stopping
            tolerance, restarts (GMM k-means++).
        semi_amortised_steps: SVI refinement steps from the encoder's output.
        nuts_subset, nuts_warmup, nuts_samples, nuts_chains, nuts_max_tree_depth: NUTS
            reference on the first ``nuts_subset`` test points.
        seed, device, progress: reproducibility, device request, progress bars.
    """

    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    elbo: str = "analytic-kl"
    objective: str = "elbo"
    k: int = 1
    estimator: str = "reparam"
    hidden: Sequence[int] = (256,)
    iwae_k: int = 1000
    test_refit_steps: int = 500
    local_steps: int = 3
    em_max_iter: int = 500
    em_tol: float = 1e-6
    n_init: int = 1
    semi_amortised_steps: int = 200
    nuts_subset: int = 10
    nuts_warmup: int = 100
    nuts_samples: int = 100
    nuts_chains: int = 2
    nuts_max_tree_depth: int = 6
    seed: int = 0
    device: str = "cpu"
    progress: bool = False

    def train_config(self, **overrides) -> TrainConfig:
        """The :class:`~ppl_gen.infer.training.TrainConfig` for SVI schemes."""
        base = dict(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            elbo=self.elbo,
            objective=self.objective,
            k=self.k,
            estimator=self.estimator,
            seed=self.seed,
            val_every=max(1, self.epochs // 20),
            progress=self.progress,
            device=self.device,
        )
        return TrainConfig(**{**base, **overrides})


@dataclass
class SchemeResult:
    """What one scheme produced.

    Attributes:
        name: the scheme.
        model: the fitted model.
        guide: the guide used for the test bounds.
        history: training objective per iteration/epoch (nats per datapoint) and seconds.
        objective_name: ``"log-likelihood"`` (EM) or ``"ELBO"``.
        bounds: test ELBO / IWAE-K per datapoint, with log-weights ``(N, K)``.
        test_log_likelihood: ``(N,)`` exact ``log p(x)`` of the test points evaluated
            (the variational predictive for the Bayesian GMM), or ``None``.
        train_seconds, test_seconds: wall time of fitting and of test-time inference plus
            bounds (seconds).
        extra: scheme-specific numbers (R-hat, ESS, amortisation gap, ...).
        epochs: SVI training epochs (``None`` for schemes that are not SVI).
        notes: sentences for the report.
        param_store: the fit's own Pyro parameter store
            (:class:`~ppl_gen.infer.param_stores.FitStore`), entered whenever the fitted
            model is used again (refined, sampled, drawn); ``None`` outside ``compare``.
        converged, convergence: whether the fit met its documented convergence criterion
            (``None``: not assessed) and that criterion with its figures, in words
            (:mod:`ppl_gen.infer.schemes.convergence`).
    """

    name: str
    model: Callable
    guide: Callable | None
    history: FitHistory
    objective_name: str
    bounds: BoundEstimate
    test_log_likelihood: torch.Tensor | None
    train_seconds: float
    test_seconds: float
    extra: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    epochs: int | None = None
    param_store: FitStore | None = None
    converged: bool | None = None
    convergence: str = ""


def history_from_training(result: TrainResult) -> FitHistory:
    """Per-epoch training ELBO of :func:`ppl_gen.infer.training.train` as a :class:`FitHistory`."""
    return FitHistory(
        objective=list(result.history["train_elbo"]),
        seconds=list(result.history["seconds"]),
        converged=True,
    )


def exact_log_likelihood(model: Callable, x: torch.Tensor) -> torch.Tensor | None:
    """``model.log_marginal(x)`` when the model has one, else ``None``."""
    fn = getattr(model, "log_marginal", None)
    if fn is None:
        return None
    with torch.no_grad():
        return fn(x).detach().cpu()


def bounds_with_weights(
    model, guide, x: torch.Tensor, k: int, dist: DistributedContext | None = None
) -> BoundEstimate:
    """:func:`ppl_gen.infer.bounds.evaluate_bounds` keeping the ``(N, K)`` log-weights (rows split
    over the ranks of ``dist`` and gathered in order, when given)."""
    return evaluate_bounds(model, guide, x, k, keep_log_weights=True, dist=dist)
