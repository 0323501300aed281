"""The SVI schemes: ``svi-local`` (non-amortised) and ``amortised``.

* ``svi-local``: stochastic variational inference with a per-datapoint Gaussian
  ``q^(i)(z)`` (:class:`~ppl_gen.guides.MeanFieldGuide`), test posteriors fitted with the
  model frozen.  For a discrete latent (the GMM's assignment) the assignment is summed out
  exactly with ``TraceEnum_ELBO`` -- SVI then ascends the exact log-likelihood, and the
  implied ``q`` is the exact posterior.
* ``amortised``: SVI with an encoder ``q(z | x; phi)`` (Gaussian, or categorical for the GMM,
  summed out exactly by ``TraceEnum_ELBO``).

Per-datapoint ``q^(i)`` is visited once per epoch, so each minibatch first takes
``settings.local_steps - 1`` Adam steps on its own ``q^(i)`` with the model frozen
(:attr:`ppl_gen.infer.training.TrainConfig.local_steps`), then the joint step.  A fit whose
training objective ends below where it started raises :class:`PplGenError` (a failed row).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from ppl_gen.core.errors import PplGenError
from ppl_gen.data.datasets import DataSplits
from ppl_gen.guides import StructuredAmortisedGuide, make_guide
from ppl_gen.guides.categorical import AmortisedCategoricalGuide
from ppl_gen.guides.exact import ExactPosteriorGuide
from ppl_gen.infer.evaluation import evaluate_on
from ppl_gen.infer.schemes.base import (
    SchemeResult,
    SchemeSettings,
    bounds_with_weights,
    exact_log_likelihood,
    history_from_training,
)
from ppl_gen.infer.training import TrainConfig, TrainResult, frozen, train


def _empty_guide(x, indices=None, size=None) -> None:
    """No latent proposed: every latent is enumerated (summed out) in the model."""


def _is_discrete(model: Callable) -> bool:
    return bool(getattr(model, "discrete", False))


def _config(model: Callable, settings: SchemeSettings, **overrides) -> TrainConfig:
    """The SVI settings for ``model``: the global learning rate times the model's
    ``svi_lr_scale`` (default 1; the Gaussian mixture's parameters live in pixel units
    with covariance eigenvalues down to ``reg_covar``, see
    :attr:`ppl_gen.models.gmm.GaussianMixture.svi_lr_scale`)."""
    scale = float(getattr(model, "svi_lr_scale", 1.0))
    return settings.train_config(lr=settings.lr * scale, **overrides)


def check_improved(name: str, result: TrainResult) -> None:
    """Raise :class:`PplGenError` when an SVI fit ended below where it started.

    The per-epoch training objective (nats per datapoint) of the last epoch must exceed the
    first epoch's: a fit that got worse is reported as a failed row with this reason
    instead of a silent garbage row.
    """
    elbo = [v for v in result.history.get("train_elbo", []) if v is not None]
    if len(elbo) >= 2 and not elbo[-1] > elbo[0]:
        raise PplGenError(
            f"{name}: the training objective did not improve ({elbo[0]:.4g} nats/point in "
            f"epoch 1, {elbo[-1]:.4g} in epoch {len(elbo)}); lower the learning rate"
        )


def fit_svi_local(
    model: Callable, data: DataSplits, settings: SchemeSettings, family: str = "diag"
) -> SchemeResult:
    """Fit by SVI with per-datapoint local posteriors; score the test set.

    Args:
        model: a Pyro model following the data plate convention (``x: (batch, D)``).
        data: train split for fitting, test split ``(N, D)`` for the bounds.
        settings: SVI epochs, batch size, learning rate, IWAE K, test refit steps.
        family: the per-datapoint guide family (:data:`ppl_gen.guides.GUIDE_FAMILIES`:
            ``diag`` or ``full``); rows other than ``diag`` are named ``svi-local-<family>``.

    Returns:
        :class:`~ppl_gen.infer.schemes.SchemeResult`: per-epoch training ELBO (nats per
        datapoint), test ELBO / IWAE-K per datapoint with ``(N, K)`` log-weights, exact
        ``log p(x)`` where the model has one, wall times (seconds).
    """
    discrete = _is_discrete(model)
    if discrete:
        guide = _empty_guide
        config = settings.train_config(elbo="enum", val_every=0)
    else:
        guide = make_guide(family, model, amortised=False, num_data=data.train.shape[0])
        config = settings.train_config(local_steps=settings.local_steps)
    result = train(model, guide, data, config)
    # A per-datapoint guide knows nothing of the test points: evaluate_on refits its local
    # posteriors with the model frozen.  An enumerated assignment's q is the exact posterior.
    test_guide = ExactPosteriorGuide(model) if discrete else guide
    evaluation = evaluate_on(
        model,
        test_guide,
        data.test,
        settings.iwae_k,
        refit_steps=settings.test_refit_steps,
        keep_log_weights=True,
    )
    if discrete:
        notes = ["svi-local: the discrete assignment is enumerated (TraceEnum_ELBO)."]
    else:
        notes = [
            f"svi-local: {settings.local_steps} Adam steps on each minibatch's per-datapoint q "
            f"per joint step (model frozen between); test posteriors fitted with the model "
            f"frozen ({settings.test_refit_steps} Adam steps)."
        ]
    return SchemeResult(
        name=scheme_name("svi-local", family),
        model=model,
        guide=evaluation.guide,
        history=history_from_training(result),
        objective_name="ELBO" if not discrete else "log-likelihood",
        bounds=evaluation.bounds,
        test_log_likelihood=exact_log_likelihood(model, data.test),
        train_seconds=result.seconds,
        test_seconds=evaluation.inference_seconds + evaluation.bound_seconds,
        notes=notes,
        epochs=result.epochs,
    )


def scheme_name(scheme: str, family: str) -> str:
    """The row name of ``scheme`` fitted with guide ``family`` (``amortised-full``, ...;
    the default ``diag`` family keeps the plain name)."""
    return scheme if family == "diag" else f"{scheme}-{family}"


def make_encoder_guide(model: Callable, settings: SchemeSettings, family: str = "diag") -> Callable:
    """Encoder guide of ``family`` (diag Gaussian, full-rank, IAF, structured), or the categorical
    encoder for a model with a discrete assignment (``model.discrete``)."""
    if _is_discrete(model):
        return AmortisedCategoricalGuide(model, tuple(settings.hidden))
    if family == "structured":  # q(z_j | x, its model children): a dependency order
        return StructuredAmortisedGuide(model, hidden=tuple(settings.hidden))
    return make_guide(family, model, amortised=True, hidden=tuple(settings.hidden))


def fit_amortised(
    model: Callable, data: DataSplits, settings: SchemeSettings, family: str = "diag"
) -> SchemeResult:
    """Fit model and encoder guide jointly by SVI; score the test set with the encoder.

    ``family`` is the encoder's family (:data:`ppl_gen.guides.GUIDE_FAMILIES`); rows other
    than ``diag`` are named ``amortised-<family>``.  Returns the same
    :class:`~ppl_gen.infer.schemes.SchemeResult` fields as :func:`fit_svi_local` (bounds in
    nats per test datapoint, times in seconds).
    """
    guide = make_encoder_guide(model, settings, family)
    config = (
        _config(model, settings, elbo="enum") if _is_discrete(model) else _config(model, settings)
    )
    if not getattr(guide, "analytic_kl_safe", True) and "analytic-kl" in config.elbo:
        config = replace(config, elbo="trace")  # closed-form KLs need the model's order
    if _is_discrete(model):
        # E-step first: an untrained categorical encoder spreads each point over every
        # component, and its q-weighted gradients wreck a mixture started at k-means++; so
        # the encoder first learns q(c|x) for epochs // 5 epochs with the model frozen, at
        # the unscaled learning rate (svi_lr_scale is about the model's parameters; at the
        # scaled rate the encoder is still far from p(c|x) when the joint fit starts).
        warm_up = replace(config, epochs=max(1, settings.epochs // 5), lr=settings.lr)
        with frozen(model):
            train(model, guide, data, warm_up)
    result = train(model, guide, data, config)
    check_improved("amortised", result)
    t1 = time.perf_counter()
    bounds = bounds_with_weights(model, guide, data.test, settings.iwae_k)
    return SchemeResult(
        name=scheme_name("amortised", family),
        model=model,
        guide=guide,
        history=history_from_training(result),
        objective_name="ELBO",
        bounds=bounds,
        test_log_likelihood=exact_log_likelihood(model, data.test),
        train_seconds=result.seconds,
        test_seconds=time.perf_counter() - t1,
        notes=["amortised: one encoder pass per test point."],
        epochs=result.epochs,
    )
