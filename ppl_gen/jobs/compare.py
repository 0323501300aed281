"""``ppl-gen compare``: fit one model with several inference schemes and compare the fits.

Every scheme fits the same model definition from the same seed (:mod:`ppl_gen.infer.schemes`),
then the test set is scored with the ELBO and IWAE-K (same K everywhere, nats per test
datapoint), the exact log-likelihood where the model has one, the gaps between them
(Cremer et al. 2018) and the PSIS k-hat of the importance weights
(:mod:`ppl_gen.infer.diagnostics`).  The run directory receives ``report.md``, ``metrics.json``,
``loss_curves.png``, ``objective_vs_time.png``, ``khat_hist.png``, ``samples.png`` and
``reconstructions.png`` (models with a decoder), and ``manifold_<scheme>.png`` for a 2-D
latent space under a standard normal prior (Kingma & Welling 2014, fig. 4).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import pyro
import torch
from pyro import poutine

from ppl_gen.core.device import describe, resolve_device
from ppl_gen.core.errors import PplGenError
from ppl_gen.core.io import write_json
from ppl_gen.data.datasets import DataSplits, load_dataset
from ppl_gen.guides import AmortisedGaussianGuide, MeanFieldGuide
from ppl_gen.infer.bounds import iwae_by_k
from ppl_gen.infer.diagnostics import khat_summary, psis_khat
from ppl_gen.infer.param_stores import FitStore
from ppl_gen.infer.schemes import (
    SchemeResult,
    SchemeSettings,
    fit_amortised,
    fit_em,
    fit_mean_field,
    fit_nuts,
    fit_semi_amortised,
    fit_svi_local,
)
from ppl_gen.infer.schemes.convergence import assess, check_against_em
from ppl_gen.infer.schemes.nuts import write_inference_data
from ppl_gen.infer.schemes.preflight import check_schemes
from ppl_gen.infer.schemes.svi import make_encoder_guide
from ppl_gen.infer.training import TrainingDiverged
from ppl_gen.jobs.compare_config import CompareConfig
from ppl_gen.jobs.compare_reference import fill_reference
from ppl_gen.lvm.builders import build_model
from ppl_gen.lvm.priors import StandardNormalPrior
from ppl_gen.lvm.user_model import is_model_file, load_model_factory
from ppl_gen.viz import report as reports
from ppl_gen.viz.curves import plot_iwae_vs_k

#: Version of ``metrics.json`` (JSON Schema: ``ppl_gen/jobs/metrics.schema.json``).
METRICS_SCHEMA_VERSION = 2


def _factory_name(factory: Callable) -> str:
    return getattr(factory, "__name__", type(factory).__name__)


def _initialised(model: Callable, data: DataSplits, seed: int) -> Callable:
    """Give every scheme the same data-dependent starting point where the model has one
    (k-means++ for the GMM, data mean and variance for PPCA / FA)."""
    init = getattr(model, "init_from_data", None)
    if callable(init):
        init(data.train, seed=seed)
    return model


def _check_schemes(
    model: Callable, schemes: Sequence[str], name: str, data: DataSplits, settings, seed: int
) -> None:
    """Refuse the model, or schemes that cannot apply to it, before anything is trained
    (:func:`ppl_gen.infer.schemes.preflight.check_schemes`, on rows as training sees them)."""
    x = data.train[:4]
    if data.binarize == "dynamic":
        gen = torch.Generator().manual_seed(seed + 2)
        x = torch.bernoulli(x.cpu(), generator=gen).to(x.device)
    check_schemes(model, schemes, name, x, lambda m: make_encoder_guide(m, settings))


def _posterior_mean(result: SchemeResult, x: torch.Tensor) -> torch.Tensor | None:
    """Posterior mean of the latent for the rows of ``x`` under the scheme's q."""
    model, guide = result.model, result.guide
    site = getattr(model, "latent_site", "z")
    rows = torch.arange(x.shape[0], device=x.device)
    with torch.no_grad():
        if guide is None and callable(getattr(model, "mean_field_posterior", None)):
            return model.mean_field_posterior(x)[0]
        if isinstance(guide, AmortisedGaussianGuide):
            return guide.encode(x)[site][0]
        if isinstance(guide, MeanFieldGuide):
            return guide.posterior(rows)[site][0]
        if guide is not None and callable(getattr(model, "exact_posterior", None)):
            posterior = model.exact_posterior(x)
            if not getattr(model, "discrete", False):
                return posterior.mean
        if guide is not None and not getattr(model, "discrete", False):
            # Any other guide (full-rank, IAF, ...): Monte Carlo mean of 64 draws per row.
            with pyro.plate("_posterior_draws", 64, dim=-2):  # in the scheme's own store
                trace = poutine.trace(guide).get_trace(x, rows, x.shape[0])
            if site in trace.nodes:
                return trace.nodes[site]["value"].mean(0)
    return None


def _reference_for_nuts(previous: dict[str, SchemeResult]) -> SchemeResult | None:
    for name in ("em", "svi-local", "amortised", "mean-field"):
        if name in previous and not getattr(previous[name].model, "discrete", False):
            return previous[name]
    return None


def scheme_rows(schemes: Sequence[str], families: Sequence[str]) -> list[str]:
    """The comparison's rows: each scheme once, except ``amortised`` and ``svi-local``, which
    get a row per guide family (``amortised-full``, ``svi-local-full``, ``amortised-iaf``;
    the ``diag`` family keeps the plain name; ``iaf`` and ``structured`` are amortised only)."""
    rows = []
    for scheme in schemes:
        if scheme not in ("amortised", "svi-local"):
            rows.append(scheme)
            continue
        for family in families:
            if family in ("iaf", "structured") and scheme == "svi-local":
                continue
            rows.append(scheme if family == "diag" else f"{scheme}-{family}")
    return rows


def _run_scheme(
    name: str,
    factory: Callable[[], Callable],
    data: DataSplits,
    settings: SchemeSettings,
    previous: dict[str, SchemeResult],
) -> SchemeResult:
    if name == "em":
        return fit_em(factory(), data, settings)
    if name == "mean-field":
        return fit_mean_field(factory(), data, settings)
    if name.startswith("svi-local"):
        return fit_svi_local(factory(), data, settings, name[len("svi-local-") :] or "diag")
    if name.startswith("amortised"):
        return fit_amortised(factory(), data, settings, name[len("amortised-") :] or "diag")
    if name == "semi-amortised":
        amortised = previous.get("amortised")
        if amortised is None:
            return fit_semi_amortised(factory, data, settings)
        with amortised.param_store:  # refine the amortised fit, in its own store
            result = fit_semi_amortised(factory, data, settings, amortised)
        result.param_store = amortised.param_store
        return result
    reference = _reference_for_nuts(previous)
    if reference is None:
        model = factory()
        reference = (fit_em if callable(getattr(model, "em", None)) else fit_amortised)(
            model, data, settings
        )
        return fit_nuts(reference.model, data, settings, fitted_by=reference.name)
    with reference.param_store:
        result = fit_nuts(reference.model, data, settings, fitted_by=reference.name)
    result.param_store = reference.param_store
    return result


_METRIC_KEYS = (
    "objective",
    "final_train_objective",
    "test_elbo",
    "test_elbo_se",
    "test_iwae",
    "test_iwae_se",
    "iwae_k",
    "n_evaluated",
    "test_log_likelihood",
    "test_log_likelihood_method",
    "gap_exact_minus_iwae",
    "gap_iwae_minus_elbo",
    "approximation_gap",
    "amortisation_gap",
    "psis_khat_mean",
    "psis_khat_n_scored",
    "psis_khat_n_above_0_7",
    "psis_khat_frac_above_0_7",
    "psis_khat_applicable",
    "bound_unreliable",
    "train_seconds",
    "test_seconds",
    "iterations",
    "epochs",
    "converged",
    "convergence",
)


def _scheme_metrics(result: SchemeResult) -> tuple[dict, torch.Tensor]:
    b = result.bounds
    exact = result.test_log_likelihood
    exact_mean = float(exact.mean()) if exact is not None else None
    khat = psis_khat(b.log_weights)
    history = result.history
    finite = [v for v in history.objective if v is not None and math.isfinite(v)]
    local_q = result.name.startswith(("em", "mean-field", "svi-local", "semi-amortised", "nuts"))
    metrics = {
        "objective": result.objective_name,
        "final_train_objective": finite[-1] if finite else None,
        "test_elbo": b.elbo_mean,
        "test_elbo_se": b.elbo_se,
        "test_iwae": b.iwae_mean,
        "test_iwae_se": b.iwae_se,
        "iwae_k": b.k,
        "n_evaluated": int(b.elbo.shape[0]),
        "test_log_likelihood": exact_mean,
        "gap_exact_minus_iwae": exact_mean - b.iwae_mean if exact is not None else None,
        "gap_iwae_minus_elbo": b.iwae_mean - b.elbo_mean,
        "approximation_gap": exact_mean - b.elbo_mean if exact is not None and local_q else None,
        "amortisation_gap": result.extra.get("amortisation_gap"),
        **khat_summary(khat),
        "train_seconds": result.train_seconds,
        "test_seconds": result.test_seconds,
        "iterations": history.iterations,
        "epochs": result.epochs,
        "converged": history.converged if result.converged is None else result.converged,
        "convergence": result.convergence or None,
        "history": {  # metrics.schema.json: one entry per iteration (EM, CAVI) or epoch (SVI)
            "step": "epoch" if result.epochs is not None else "iteration",
            "objective": result.objective_name,
            "units": "nats per datapoint; seconds cumulative",
            "values": [
                v if v is not None and math.isfinite(v) else None for v in history.objective
            ],
            "seconds": list(history.seconds),
        },
    }
    for key in ("rhat_max", "ess_bulk_min"):
        if key in result.extra:
            metrics[key] = result.extra[key]
    return metrics, khat


def run_compare(
    config: CompareConfig | None = None,
    model_factory: Callable[[DataSplits], Callable] | None = None,
) -> dict:
    """Fit the model with every scheme, score the test set, write the report.

    Args:
        config: the settings (defaults: :class:`CompareConfig`).
        model_factory: optional ``factory(data) -> model`` building a fresh instance of *your
            own* model for each scheme: declared with
            :class:`~ppl_gen.lvm.declare.LatentVariableModel` or a hand-written Pyro model
            following the data plate convention.  ``config.model`` is then ignored.  A model
            that offers ``exact_posterior`` and ``log_marginal`` gets ``em``.

    Returns:
        The metrics written to ``<out>/metrics.json`` (schema in the README): setup keys
        and ``schemes.<name>`` with bounds (nats per test datapoint, higher is better),
        exact log-likelihood and gaps (``None`` where not applicable), PSIS k-hat summary,
        times (seconds) and iterations.

    Raises:
        PplGenError: bad options, data, or a scheme that does not apply to the model
            (checked before anything is trained or written).
    """
    config = config or CompareConfig()
    config.validate()
    device = resolve_device(config.device)
    data: DataSplits = load_dataset(
        config.data,
        config.data_root,
        download=config.download,
        binarize=config.resolved_binarize,
        seed=config.seed,
        n_train=config.n_train,
        n_test=config.n_test,
    ).to(device)
    spec = config.spec(data.data_dim, data.image_shape)
    if model_factory is None and is_model_file(config.model):
        model_factory = load_model_factory(config.model)
    if model_factory is None:
        spec.validate()
        model_name = config.model

        def build():
            return build_model(spec).to(device)
    else:
        model_name = _factory_name(model_factory)

        def build():
            model = model_factory(data)
            return model.to(device) if isinstance(model, torch.nn.Module) else model

    def factory():
        return _initialised(build(), data, config.seed)

    schemes = config.resolved_schemes
    settings = config.settings(device)
    _check_schemes(build(), schemes, model_name, data, settings, config.seed)
    out = Path(config.out)
    metrics: dict = {
        "schema_version": METRICS_SCHEMA_VERSION,
        "dataset": data.name,
        "model": model_name,
        "n_train": int(data.train.shape[0]),
        "n_test": int(data.test.shape[0]),
        "latent_dim": config.latent_dim if config.model != "gmm" else None,
        "device": describe(device),
        "seed": config.seed,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "schemes": {},
    }
    metrics["config"]["schemes"] = list(schemes)
    metrics["config"]["binarize"] = config.resolved_binarize
    results: dict[str, SchemeResult] = {}
    khats = {}
    failures = []
    for name in scheme_rows(schemes, config.guide_families):
        pyro.set_rng_seed(config.seed)
        store = FitStore()  # each scheme's fit in its own Pyro parameter store
        try:
            with store:
                result = _run_scheme(name, factory, data, settings, results)
            check_against_em(assess(result, settings), results.get("em"))
            result.param_store = result.param_store or store
            results[name] = result
        except (PplGenError, TrainingDiverged) as exc:
            # Options were all checked up front: an error now is numerical (a diverged SVI
            # run, a collapsed covariance).  Record it and let the other schemes report.
            reason = str(exc).strip().splitlines()[0]
            metrics["schemes"][name] = {key: None for key in _METRIC_KEYS} | {"failed": reason}
            failures.append(f"{name} failed: {reason}")
            continue
        metrics["schemes"][name] = None  # filled below, once the reference column is
    methods = fill_reference(results, data.test, config.ais_steps, config.ais_chains, config.seed)
    for name, result in results.items():
        metrics["schemes"][name], khats[name] = _scheme_metrics(result)
        metrics["schemes"][name]["test_log_likelihood_method"] = methods[name]
        metrics["schemes"][name]["failed"] = None
    semi = results.get("semi-amortised")
    if semi is not None and "amortised" in results and semi.model is results["amortised"].model:
        row = metrics["schemes"]["amortised"]
        row["amortisation_gap"] = semi.extra.get("amortisation_gap")
        row["approximation_gap"] = metrics["schemes"]["semi-amortised"]["approximation_gap"]
    _write_outputs(out, config, data, metrics, results, khats, device, failures)
    return metrics


def _write_outputs(out, config, data, metrics, results, khats, device, failures) -> None:
    figures = {
        "Training objective per epoch / iteration and against wall time": "loss_curves.png",
        "Training objective against wall time, all schemes": "objective_vs_time.png",
        "PSIS k-hat of the test importance weights (> 0.7: bound unreliable)": "khat_hist.png",
    }
    curves = {
        name: {
            "train_elbo": r.history.objective,
            "seconds": r.history.seconds,
            "objective": r.objective_name,
            "step": "epoch" if r.epochs is not None else "iteration",
        }
        for name, r in results.items()
        if r.history.objective
    }
    if curves:
        reports.plot_loss_curves(curves, out / "loss_curves.png")
    else:
        figures.pop("Training objective per epoch / iteration and against wall time")
    # semi-amortised shares the amortised fit's history: draw each fit once.
    drawn, histories = set(), {}
    for name, r in results.items():
        if id(r.history) not in drawn:
            drawn.add(id(r.history))
            histories[name] = (r.history.seconds, r.history.objective, r.objective_name)
    reports.plot_objective_vs_time(histories, out / "objective_vs_time.png")
    by_k = {
        name: iwae_by_k(r.bounds.log_weights)
        for name, r in results.items()
        if r.bounds.log_weights is not None
    }
    refs = {
        name: (metrics["schemes"][name]["test_log_likelihood"], method)
        for name in by_k
        if (method := metrics["schemes"][name].get("test_log_likelihood_method"))
    }
    for name, values in by_k.items():
        metrics["schemes"][name]["iwae_by_k"] = {str(k): v for k, v in values.items()}
    if by_k:
        plot_iwae_vs_k(by_k, refs, out / "iwae_vs_k.png")
        figures["Test IWAE-K against K, with the reference log p(x) (exact or AIS)"] = (
            "iwae_vs_k.png"
        )
    reports.plot_khat_histogram(khats, out / "khat_hist.png")
    samples, recons, manifolds = {}, {}, {}
    n_recon = min(10, data.test.shape[0])
    for name, r in results.items():
        model = r.model
        if not (callable(getattr(model, "decode_mean", None)) and hasattr(model, "sample_prior")):
            continue
        with r.param_store or contextlib.nullcontext():
            torch_state = torch.get_rng_state()
            torch.manual_seed(config.seed)
            samples[name] = model.decode_mean(model.sample_prior(64, data.test)).cpu()
            torch.set_rng_state(torch_state)
            x = data.test[:n_recon]
            mean = _posterior_mean(r, x) if name != "nuts" else None
            if mean is not None:
                recons[name] = model.decode_mean(mean.detach()).cpu()
            prior = getattr(model, "prior", None)
            latent = getattr(model, "latent_dim", None)
            if latent == 2 and (prior is None or isinstance(prior, StandardNormalPrior)):
                grid = reports.latent_manifold_grid(model.decode_mean, 20, device=device)
                manifolds[name] = grid
    if samples:
        reports.save_image_panels(samples, data.image_shape, out / "samples.png", nrow=8)
        figures["Samples from p(x|z), z ~ p(z) (decoder means)"] = "samples.png"
    if recons:
        originals = data.test[:n_recon].cpu()
        reports.save_reconstructions(
            originals, recons, data.image_shape, out / "reconstructions.png"
        )
        figures["Test images and reconstructions (decoder mean at posterior mean)"] = (
            "reconstructions.png"
        )
    for name, grid in manifolds.items():
        file = f"manifold_{name}.png"
        reports.save_manifold(grid, data.image_shape, 20, out / file, title=name)
        figures[f"2-D latent manifold, {name} (Kingma & Welling 2014, fig. 4)"] = file
    if "nuts" in results:  # ArviZ users read the draws: netCDF + az.summary
        write_inference_data(results["nuts"].extra["inference_data"], out)
        results["nuts"].notes.append(
            "nuts: draws in nuts_posterior.nc (arviz.from_netcdf), az.summary in nuts_summary.csv."
        )
    notes = failures + [n for r in results.values() for n in r.notes]
    notes += [
        "Gaps (Cremer et al. 2018): approximation gap = log p(x) - ELBO of the best "
        "per-datapoint q found; amortisation gap = that ELBO - the encoder's ELBO.",
        "k-hat: Pareto-smoothed importance sampling shape of each test point's weights "
        "(ArviZ psislw); above 0.7 that point's IWAE-K estimate is unreliable. A scheme is "
        "flagged 'bound unreliable' when more than 10% of its scored points are; a discrete "
        "proposal (few distinct weights) reads 'not applicable'.",
        "Standard errors are over test datapoints.",
    ]
    write_json(out / "metrics.json", metrics)
    reports.write_report(out / "report.md", metrics, figures, notes)
