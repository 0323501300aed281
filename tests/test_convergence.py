"""Convergence criteria of the schemes, EM's stopping rule, local steps and the report flag."""

from __future__ import annotations

import math

import pytest
import torch

from ppl_gen.core.errors import PplGenError
from ppl_gen.data.datasets import load_dataset
from ppl_gen.infer.schemes.convergence import nuts_converged, svi_converged, svi_window
from ppl_gen.infer.training import TrainConfig
from ppl_gen.models import PPCA, FactorAnalysis
from ppl_gen.models.stopping import converged, remaining_gain
from ppl_gen.viz.report import format_metrics_table, ranking


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", None, binarize="none", seed=0)


def _mean_ll(model, x) -> float:
    with torch.no_grad():
        return float(model.log_marginal(x).double().mean())


def test_aitken_remaining_gain_of_a_geometric_sequence():
    # l_t = 1 - 0.9^t: increments shrink by 0.9, the gain still to come is 0.9^t.
    seq = [1.0 - 0.9**t for t in range(40)]
    assert remaining_gain(seq) == pytest.approx(0.9**39, rel=1e-6)
    assert remaining_gain(seq[:2]) == math.inf
    assert remaining_gain([0.0, 1.0, 1.0]) == 0.0
    assert remaining_gain([0.0, 1.0, 3.0]) == math.inf  # accelerating: no estimate
    assert not converged(seq, 0.0)
    assert not converged(seq, 1e-3)  # increment 1.6e-3 > tol
    # tol on any data, tol^2 on the training objective: 0.9^199 = 8e-10 left is not enough.
    assert not converged([1.0 - 0.9**t for t in range(200)], 1e-6)
    assert converged([1.0 - 0.9**t for t in range(280)], 1e-6)


def test_ppca_em_default_reaches_the_closed_form_optimum(digits):
    x, x_test = digits.train, digits.test
    ref = PPCA(64, 2)
    optimum = ref.closed_form_ml(x)
    model = PPCA(64, 2)
    history = model.em(x)  # defaults
    assert history.converged
    assert abs(optimum - history.objective[-1]) < 1e-6  # training objective, nats/point
    assert abs(_mean_ll(ref, x_test) - _mean_ll(model, x_test)) < 1e-6  # holdout


def test_fa_em_default_reaches_a_long_run(digits):
    x, x_test = digits.train, digits.test
    long = FactorAnalysis(64, 2)
    long_history = long.em(x, max_iter=1500, tol=0.0)
    model = FactorAnalysis(64, 2)
    history = model.em(x)
    assert history.converged and history.iterations < 1500
    assert abs(long_history.objective[-1] - history.objective[-1]) < 1e-6
    assert abs(_mean_ll(long, x_test) - _mean_ll(model, x_test)) < 1e-6


def test_svi_criterion_uses_windows_and_noise():
    m = svi_window(100)
    assert m == 10
    rising = [-100.0 + t for t in range(100)]
    ok, text = svi_converged(rising)
    assert not ok and "nats/point" in text
    g = torch.Generator().manual_seed(0)
    flat = (-24.0 + 0.1 * torch.randn(100, generator=g)).tolist()
    assert svi_converged(flat)[0]
    assert not svi_converged([-1.0] * 5)[0]  # too few epochs for two windows


def test_nuts_criterion():
    assert nuts_converged({"rhat_max": 1.005, "ess_bulk_min": 250.0}, chains=2)[0]
    assert not nuts_converged({"rhat_max": 1.05, "ess_bulk_min": 250.0}, chains=2)[0]
    assert not nuts_converged({"rhat_max": 1.005, "ess_bulk_min": 150.0}, chains=2)[0]
    assert not nuts_converged({}, chains=2)[0]


def test_report_flags_and_does_not_rank_a_row_that_did_not_converge():
    row = {"test_elbo": -25.0, "test_iwae": -24.0, "n_evaluated": 10, "failed": None}
    metrics = {
        "n_test": 10,
        "schemes": {
            "amortised": {**row, "converged": True},
            "mean-field": {**row, "test_iwae": -20.0, "converged": False},
            "em": {"failed": "collapsed", "test_iwae": None},
        },
    }
    table = format_metrics_table(metrics)
    assert "mean-field (not converged)" in table and "amortised (not converged)" not in table
    text = ranking(metrics)
    assert text.startswith("Ranked by test IWAE-K: amortised (-24.00).")
    assert "mean-field (not converged)" in text and "em (failed)" in text


def test_local_steps_is_validated():
    with pytest.raises(PplGenError, match="local_steps"):
        TrainConfig(local_steps=0).validate()
