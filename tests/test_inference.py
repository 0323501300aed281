"""The inference schemes of ``ppl-gen compare`` on models with a known answer."""

import json

import numpy as np
import pytest
import torch

from ppl_gen.cli import main
from ppl_gen.core.errors import PplGenError
from ppl_gen.data.datasets import load_dataset
from ppl_gen.infer.diagnostics import psis_khat
from ppl_gen.infer.schemes import (
    SchemeSettings,
    check_em,
    check_nuts,
    fit_amortised,
    fit_em,
    fit_mean_field,
    fit_nuts,
    fit_semi_amortised,
    fit_svi_local,
)
from ppl_gen.jobs.compare import CompareConfig, run_compare
from ppl_gen.models import PPCA, VAE, FactorAnalysis, GaussianMixture

SMALL = SchemeSettings(
    epochs=10,
    batch_size=128,
    lr=1e-2,
    hidden=(32,),
    iwae_k=200,
    test_refit_steps=100,
    em_max_iter=200,
    semi_amortised_steps=50,
    nuts_subset=4,
    nuts_warmup=50,
    nuts_samples=50,
    nuts_max_tree_depth=5,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0, n_train=256, n_test=40)


def _model(cls, data):
    model = cls(data.data_dim, 4)
    model.init_from_data(data.train, seed=0)
    return model


@pytest.mark.parametrize("cls", [PPCA, FactorAnalysis])
@pytest.mark.parametrize(
    "fit", [fit_em, fit_mean_field, fit_svi_local, fit_amortised], ids=lambda f: f.__name__
)
def test_exact_above_iwae_above_elbo(digits, cls, fit):
    result = fit(_model(cls, digits), digits, SMALL)
    b, exact = result.bounds, result.test_log_likelihood
    assert exact is not None and exact.shape == b.iwae.shape
    # Delta-method Monte Carlo error of each datapoint's IWAE-K (log of a mean of K
    # weights): sd(w) / (mean(w) sqrt(K)); IWAE-K may exceed log p(x) only by such noise.
    w = torch.exp(b.log_weights - b.log_weights.max(dim=1, keepdim=True).values)
    se = w.std(dim=1) / (w.mean(dim=1) * np.sqrt(b.k))
    assert torch.all(b.iwae <= exact + 4 * se + 1e-3)
    # On the same samples, log-mean-exp >= mean (Jensen): ELBO <= IWAE exactly.
    assert torch.all(b.elbo <= b.iwae + 1e-5)
    assert b.elbo_mean <= b.iwae_mean + 1e-6
    assert b.iwae_mean <= exact.mean() + 4 * float(se.pow(2).sum().sqrt()) / len(se) + 1e-4
    assert result.history.iterations > 0 and result.train_seconds > 0


def test_em_bounds_are_exact(digits):
    result = fit_em(_model(PPCA, digits), digits, SMALL)
    assert torch.allclose(result.bounds.iwae, result.test_log_likelihood, atol=1e-3)
    assert torch.allclose(result.bounds.elbo, result.test_log_likelihood, atol=1e-3)
    assert torch.isinf(psis_khat(result.bounds.log_weights)).all()  # constant weights
    history = result.history.objective
    assert all(b >= a - 1e-6 * abs(a) for a, b in zip(history, history[1:], strict=False))


def test_semi_amortised_closes_part_of_the_amortisation_gap(digits):
    amortised = fit_amortised(_model(PPCA, digits), digits, SMALL)
    semi = fit_semi_amortised(lambda: _model(PPCA, digits), digits, SMALL, amortised)
    assert semi.model is amortised.model
    gap = semi.extra["amortisation_gap"]
    assert gap == pytest.approx(semi.bounds.elbo_mean - amortised.bounds.elbo_mean)
    assert gap > 0  # refinement from the encoder's output can only help on average
    assert semi.bounds.elbo_mean <= semi.test_log_likelihood.mean() + 1e-3


def test_nuts_reference_with_rhat_and_ess(digits):
    em = fit_em(_model(PPCA, digits), digits, SMALL)
    nuts = fit_nuts(em.model, digits, SMALL, fitted_by="em")
    assert nuts.extra["n_evaluated"] == SMALL.nuts_subset
    idata = nuts.extra["inference_data"]
    assert idata.posterior["z"].shape == (2, SMALL.nuts_samples, SMALL.nuts_subset, 4)
    assert 0.9 < nuts.extra["rhat_max"] < 1.5 and nuts.extra["ess_bulk_min"] > 5
    # The Gaussian fitted to the draws is a good proposal: IWAE close to exact.
    exact = nuts.test_log_likelihood.mean()
    assert abs(nuts.bounds.iwae_mean - exact) < 0.5
    assert nuts.bounds.elbo_mean <= exact + 1e-3


def test_vae_refuses_em_and_gmm_refuses_nuts():
    with pytest.raises(PplGenError, match="em"):
        check_em(VAE(64, 2, (16,)), "vae")
    with pytest.raises(PplGenError, match="nuts"):
        check_nuts(GaussianMixture(4, 2), "gmm")


def test_psis_khat_flags_heavy_tails():
    gen = torch.Generator().manual_seed(0)
    light = torch.randn(50, 2000, generator=gen) * 0.1  # near-constant weights: reliable
    heavy = torch.randn(50, 2000, generator=gen) * 4.0  # log-normal with big sigma: unreliable
    k_light, k_heavy = psis_khat(light), psis_khat(heavy)
    assert (k_light < 0.5).all()
    assert (k_heavy > 0.7).float().mean() > 0.9


def test_compare_ppca_json_has_the_schema(tmp_path):
    config = CompareConfig(
        model="ppca",
        latent_dim=3,
        n_train=300,
        n_test=40,
        epochs=5,
        iwae_k=50,
        test_refit_steps=20,
        semi_amortised_steps=10,
        em_max_iter=50,
        nuts_subset=2,
        nuts_warmup=20,
        nuts_samples=20,
        out=str(tmp_path / "run"),
        progress=False,
    )
    metrics = run_compare(config)
    assert list(metrics["schemes"]) == [
        "em",
        "mean-field",
        "svi-local",
        "amortised",
        "semi-amortised",
        "nuts",
    ]
    for name, row in metrics["schemes"].items():
        for key in (
            "test_log_likelihood",
            "psis_khat_mean",
            "psis_khat_frac_above_0_7",
            "iterations",
            "test_elbo",
            "test_iwae",
            "iwae_k",
            "train_seconds",
        ):
            assert key in row, (name, key)
        assert row["test_log_likelihood"] is not None
    em = metrics["schemes"]["em"]
    assert abs(em["gap_exact_minus_iwae"]) < 1e-3 and em["psis_khat_mean"] is None
    assert metrics["schemes"]["amortised"]["amortisation_gap"] is not None
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"objective_vs_time.png", "khat_hist.png", "report.md", "metrics.json"} <= files
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--model", "vae", "--schemes", "em"], "em"),
        (["--model", "gmm", "--schemes", "nuts"], "nuts"),
        (["--model", "ppca", "--schemes", "em,bogus"], "--schemes"),
        (["--model", "ppca", "--iwae-k", "0"], "--iwae-k"),
        (["--model", "ppca", "--latent-dim", "64"], "--latent-dim"),
        (["--model", "gmm", "--covariance", "spherical"], "--covariance"),
        (["--model", "gmm", "--components", "0"], "--components"),
        (["--model", "nope"], "--model"),
        (["--model", "ppca", "--em-max-iter", "0"], "--em-max-iter"),
    ],
)
def test_compare_bad_input_exits_2(tmp_path, capsys, args, flag):
    out = tmp_path / "out"
    assert main(["compare", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and flag in err[0]
    assert not out.exists()


@pytest.mark.parametrize(
    "array, flag",
    [
        (np.array([[0.0, np.nan], [1.0, 2.0]] * 10), "--data"),
        (np.array([[0.0, np.inf], [1.0, 2.0]] * 10), "--data"),
        (np.zeros(20), "--data"),
        (np.zeros((4, 3, 2, 2)), "--data"),
    ],
)
def test_compare_bad_arrays_exit_2(tmp_path, capsys, array, flag):
    path = tmp_path / "x.npy"
    np.save(path, array)
    out = tmp_path / "out"
    assert (
        main(
            [
                "compare",
                "--model",
                "ppca",
                "--latent-dim",
                "1",
                "--data",
                str(path),
                "--out",
                str(out),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0]
    assert not out.exists()


def test_a_scheme_that_fails_numerically_is_reported_not_fatal(tmp_path, monkeypatch):
    import ppl_gen.jobs.compare as compare_module

    def broken(model, data, settings, family="diag"):
        raise PplGenError("covariance of component 0 is not positive definite")

    monkeypatch.setattr(compare_module, "fit_svi_local", broken)
    config = CompareConfig(
        model="ppca",
        latent_dim=2,
        n_train=100,
        n_test=20,
        schemes=("em", "svi-local"),
        iwae_k=10,
        out=str(tmp_path / "run"),
        progress=False,
    )
    metrics = run_compare(config)
    assert metrics["schemes"]["em"]["failed"] is None
    failed = metrics["schemes"]["svi-local"]
    assert failed["failed"].startswith("covariance") and failed["test_elbo"] is None
    report = (tmp_path / "run" / "report.md").read_text()
    assert "svi-local failed: covariance" in report
