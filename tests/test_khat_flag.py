"""The PSIS k-hat reliability flag (issue 15, item 3): counts, the 10% rule, "not applicable"
for discrete proposals, and rows scored on a subset showing their n."""

from __future__ import annotations

import pytest
import torch

from ppl_gen.infer.diagnostics import (
    UNRELIABLE_FRACTION,
    khat_cell,
    khat_summary,
    psis_khat,
)
from ppl_gen.viz import report as reports

K = 1000


def _lognormal(n: int, sigma: float, seed: int) -> torch.Tensor:
    """``(n, K)`` log-weights of a log-normal weight distribution (sigma 0.5: light tail,
    k-hat well below 0.7; sigma 4: heavy tail, k-hat above 0.7)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, K, generator=gen, dtype=torch.float64) * sigma


def _row(log_weights: torch.Tensor) -> dict:
    return khat_summary(psis_khat(log_weights))


def test_all_good_points_are_reliable():
    row = _row(_lognormal(100, 0.5, 0))
    assert row["psis_khat_n_scored"] == 100 and row["psis_khat_n_above_0_7"] == 0
    assert row["psis_khat_applicable"] and not row["bound_unreliable"]
    assert khat_cell(row) == "0 of 100"


def test_a_few_bad_points_are_counted_but_do_not_flag_the_scheme():
    lw = torch.cat([_lognormal(95, 0.5, 1), _lognormal(5, 4.0, 2)])
    row = _row(lw)
    assert row["psis_khat_n_above_0_7"] == 5 and row["psis_khat_frac_above_0_7"] == 0.05
    assert not row["bound_unreliable"]
    assert khat_cell(row) == "5 of 100 (5%)"


def test_many_bad_points_flag_the_scheme():
    lw = torch.cat([_lognormal(70, 0.5, 3), _lognormal(30, 4.0, 4)])
    row = _row(lw)
    assert row["psis_khat_n_above_0_7"] == 30
    assert row["psis_khat_frac_above_0_7"] > UNRELIABLE_FRACTION and row["bound_unreliable"]
    assert khat_cell(row) == "30 of 100 (30%) (bound unreliable)"


def test_one_bad_point_in_359_never_reads_zero_percent_unreliable():
    lw = torch.cat([_lognormal(358, 0.5, 5), _lognormal(1, 4.0, 6)])
    row = _row(lw)
    cell = khat_cell(row)
    assert row["psis_khat_n_above_0_7"] == 1 and not row["bound_unreliable"]
    assert cell == "1 of 359"
    assert "0%" not in cell and "unreliable" not in cell
    # rows written before the counts existed: a positive fraction never rounds to 0%
    legacy = khat_cell({"psis_khat_frac_above_0_7": 1 / 359, "bound_unreliable": False})
    assert legacy == "<1%"


def test_few_distinct_weights_are_not_applicable():
    """A categorical proposal over 10 components: K draws take at most 10 log-weight values
    (bounded weights).  Raw PSIS fits a tail to tied values; here it is not applicable."""
    gen = torch.Generator().manual_seed(7)
    values = torch.randn(80, 10, generator=gen, dtype=torch.float64) * 3.0  # per component
    draws = torch.randint(0, 10, (80, K), generator=gen)
    lw = torch.gather(values, 1, draws)
    khat = psis_khat(lw)
    assert torch.isnan(khat).all()
    row = khat_summary(khat)
    assert row["psis_khat_applicable"] is False and row["bound_unreliable"] is False
    assert row["psis_khat_mean"] is None and row["psis_khat_n_scored"] == 0
    assert khat_cell(row) == "not applicable (discrete proposal)"


def test_a_real_categorical_guide_on_a_gmm_is_not_a_false_alarm(digits_splits):
    from ppl_gen.guides.categorical import AmortisedCategoricalGuide
    from ppl_gen.infer.bounds import evaluate_bounds
    from ppl_gen.models import GaussianMixture

    torch.manual_seed(0)
    x = digits_splits.test[:40]
    model = GaussianMixture(digits_splits.data_dim, 3)
    model.init_from_data(digits_splits.train[:300], seed=0)
    guide = AmortisedCategoricalGuide(model, (8,))
    bounds = evaluate_bounds(model, guide, x, 200, keep_log_weights=True)
    row = khat_summary(psis_khat(bounds.log_weights))
    assert row["psis_khat_applicable"] is False and not row["bound_unreliable"]


def test_constant_weights_are_reliable_and_scored():
    row = _row(torch.full((20, K), -3.0, dtype=torch.float64))
    assert row["psis_khat_n_scored"] == 20 and row["psis_khat_n_above_0_7"] == 0
    assert row["psis_khat_mean"] is None and not row["bound_unreliable"]


def test_the_table_shows_counts_and_the_subset_n():
    metrics = {
        "n_test": 359,
        "schemes": {
            "amortised": {
                "test_elbo": -20.0,
                "n_evaluated": 359,
                **_row(torch.cat([_lognormal(358, 0.5, 8), _lognormal(1, 4.0, 9)])),
            },
            "nuts": {"test_elbo": -19.0, "n_evaluated": 10, **_row(_lognormal(10, 0.5, 10))},
        },
    }
    rows = {}
    for line in reports.format_metrics_table(metrics).splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    assert set(rows) == {"amortised", "nuts (n = 10 of 359)"}
    assert rows["amortised"][9] == "1 of 359"
    assert rows["nuts (n = 10 of 359)"][9] == "0 of 10"


@pytest.fixture(scope="module")
def digits_splits():
    import ppl_gen

    return ppl_gen.load_dataset("digits", binarize="none", seed=0)
