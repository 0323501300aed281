"""Tests for the linear-Gaussian models PPCA and factor analysis: exact marginal and
posterior against independent formulas, EM (monotone, reaches the TB99 closed form),
mean-field variational EM (monotone ELBO, bounds, variance under-estimation), bad input."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from ppl_gen.core.errors import PplGenError
from ppl_gen.data.datasets import load_dataset
from ppl_gen.infer.bounds import PARTICLE_PLATE, evaluate_bounds
from ppl_gen.lvm.plates import data_plate
from ppl_gen.lvm.tractable import has_exact_posterior
from ppl_gen.models import PPCA, FactorAnalysis
from ppl_gen.models.linear_gaussian import NOISE_FLOOR

MODELS = [PPCA, FactorAnalysis]
D, Q, N = 7, 3, 50


def _randomise(model, seed: int = 0):
    """Random parameters (noise variances in [0.2, 1.2]); returns the model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.W.copy_(torch.randn(model.W.shape, generator=g, dtype=model.W.dtype))
        model.mu.copy_(torch.randn(model.mu.shape, generator=g, dtype=model.mu.dtype))
        if isinstance(model, PPCA):
            model.log_sigma2.fill_(math.log(0.5))
        else:
            psi = 0.2 + torch.rand(model.data_dim, generator=g, dtype=model.log_psi.dtype)
            model.log_psi.copy_(psi.log())
    return model


def _covariance(model) -> torch.Tensor:
    """``W W^T + diag(noise)`` in float64, formed directly (no Woodbury)."""
    W = model.W.detach().double()
    return W @ W.T + torch.diag(model.noise_variance().detach().double())


def _sample(model, n: int, seed: int = 1) -> torch.Tensor:
    """``n`` float64 rows drawn from the model's marginal."""
    g = torch.Generator().manual_seed(seed)
    L = torch.linalg.cholesky(_covariance(model))
    eps = torch.randn(n, model.data_dim, generator=g, dtype=torch.float64)
    return model.mu.detach().double() + eps @ L.T


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    splits = load_dataset("digits")
    return splits.train, splits.test


@pytest.fixture(params=MODELS, ids=lambda c: c.__name__)
def model_cls(request):
    return request.param


@pytest.fixture
def random_model(model_cls):
    return _randomise(model_cls(D, Q).double())


# ---------------------------------------------------------------- exact quantities


def test_interface(model_cls):
    model = model_cls(D, Q)
    assert has_exact_posterior(model)
    assert model.latent_shapes == {"z": (Q,)} and model.latent_site == "z"
    assert model.W.shape == (D, Q) and model.mu.shape == (D,)
    assert model.W.dtype == torch.float32
    assert model.noise_variance().shape == (D,)
    assert model.image_shape == (D,)
    assert model_cls(D, Q).scope != model.scope


def test_log_marginal_matches_torch_mvn(random_model):
    x = _sample(random_model, N)
    mvn = torch.distributions.MultivariateNormal(
        random_model.mu.detach(), covariance_matrix=_covariance(random_model)
    )
    got = random_model.log_marginal(x)
    assert got.shape == (N,)
    torch.testing.assert_close(got, mvn.log_prob(x), rtol=1e-10, atol=1e-10)


def test_log_marginal_float32_and_differentiable(model_cls):
    model = _randomise(model_cls(D, Q))
    x = _sample(model, N).float()
    lp = model.log_marginal(x)
    assert lp.dtype == torch.float32
    mvn = torch.distributions.MultivariateNormal(
        model.mu.detach().double(), covariance_matrix=_covariance(model)
    )
    torch.testing.assert_close(lp.double(), mvn.log_prob(x.double()), rtol=1e-5, atol=1e-4)
    lp.sum().backward()
    assert model.W.grad is not None and model.W.grad.abs().sum() > 0


def test_exact_posterior_matches_gaussian_conditioning(random_model):
    x = _sample(random_model, N)
    post = random_model.exact_posterior(x)
    assert post.batch_shape == (N,) and post.event_shape == (Q,)
    # Joint Gaussian of (z, x): cov [[I, W^T], [W, C]]; condition on x with torch.linalg.
    W = random_model.W.detach()
    C = _covariance(random_model)
    mean = torch.linalg.solve(C, (x - random_model.mu.detach()).T).T @ W  # W^T C^-1 (x - mu)
    cov = torch.eye(Q, dtype=torch.float64) - W.T @ torch.linalg.solve(C, W)
    torch.testing.assert_close(post.loc, mean, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(post.covariance_matrix[0], cov, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(post.covariance_matrix[-1], cov, rtol=1e-9, atol=1e-9)


def test_ppca_posterior_is_tipping_bishop_eq6():
    model = _randomise(PPCA(D, Q).double())
    x = _sample(model, N)
    W, s2 = model.W.detach(), model.sigma2
    M = W.T @ W + s2 * torch.eye(Q, dtype=torch.float64)
    mean = torch.linalg.solve(M, W.T @ (x - model.mu.detach()).T).T
    post = model.exact_posterior(x)
    torch.testing.assert_close(post.loc, mean, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(post.covariance_matrix[0], s2 * torch.linalg.inv(M))


def test_elbo_with_exact_posterior_guide_equals_log_marginal(model_cls):
    """With q = p(z | x) every log-weight equals log p(x): ELBO = IWAE = log p(x)."""
    model = _randomise(model_cls(D, Q))
    x = _sample(model, 20).float()

    def exact_guide(x, indices=None, size=None):
        post = model.exact_posterior(x)
        with data_plate(x, indices, size):
            pyro.sample("z", post)

    bounds = evaluate_bounds(model, exact_guide, x, k=64, keep_log_weights=True)
    expected = model.log_marginal(x).detach()
    assert bounds.log_weights.shape == (20, 64)
    assert float(bounds.log_weights.std(dim=1).max()) < 1e-3
    torch.testing.assert_close(bounds.elbo, expected, rtol=0, atol=2e-3)
    torch.testing.assert_close(bounds.iwae, expected, rtol=0, atol=2e-3)


def test_model_under_particle_plate(model_cls):
    model = model_cls(D, Q)
    x = torch.randn(5, D)
    with pyro.plate(PARTICLE_PLATE, 4, dim=-2):
        trace = poutine.trace(model).get_trace(x)
    assert trace.nodes["z"]["value"].shape == (4, 5, Q)
    assert trace.nodes["x"]["fn"].batch_shape == (4, 5)
    assert trace.nodes["x"]["fn"].event_shape == (D,)
    assert trace.nodes["x"]["fn"].log_prob(x).shape == (4, 5)


def test_decode_and_prior(model_cls):
    model = _randomise(model_cls(D, Q))
    z = model.sample_prior(6, torch.zeros(1))
    assert z.shape == (6, Q) and not z.requires_grad
    out = model.decode_mean(z)
    torch.testing.assert_close(out, z @ model.W.detach().T + model.mu.detach())
    assert not out.requires_grad


def test_init_from_data(model_cls, digits):
    x = digits[0]
    model = model_cls(64, 4)
    model.init_from_data(x, seed=3)
    var = x.double().var(0, unbiased=False)
    torch.testing.assert_close(model.mu.detach(), x.mean(0), rtol=1e-5, atol=1e-6)
    expected = var.mean() if model_cls is PPCA else var.clamp_min(NOISE_FLOOR)
    torch.testing.assert_close(
        model.noise_variance().detach().double(), expected.expand(64), rtol=1e-5, atol=1e-8
    )
    W3 = model.W.detach().clone()
    model.init_from_data(x, seed=3)
    assert torch.equal(model.W.detach(), W3)
    model.init_from_data(x, seed=4)
    assert not torch.equal(model.W.detach(), W3)


# ---------------------------------------------------------------- EM


def test_em_log_likelihood_never_decreases(model_cls, digits):
    x = digits[0]
    model = model_cls(64, 5)
    history = model.em(x, max_iter=100, tol=0.0)
    ll = np.array([history.extra["initial_objective"], *history.objective])
    assert history.iterations == 100 and not history.converged
    assert len(history.seconds) == 100 and np.all(np.diff(history.seconds) >= 0)
    assert np.all(np.diff(ll) >= -1e-9 * np.abs(ll[:-1])), np.diff(ll).min()
    assert ll[-1] > ll[0] + 1.0  # it actually learned something
    # The recorded objective is the exact average log-likelihood of the stored parameters.
    assert abs(float(model.log_marginal(x.double()).detach().mean()) - ll[-1]) < 1e-3


def test_em_stops_on_tolerance(model_cls, digits):
    history = model_cls(64, 2).em(digits[0], max_iter=500, tol=1e-4)
    assert history.converged and history.iterations < 500
    a, b = history.objective[-2:]
    assert abs(b - a) < 1e-4 * abs(a)


def test_ppca_em_reaches_closed_form_ml(digits):
    x = digits[0]
    exact = PPCA(64, 3)
    ll_ml = exact.closed_form_ml(x)
    assert abs(float(exact.log_marginal(x.double()).detach().mean()) - ll_ml) < 1e-4
    fitted = PPCA(64, 3)
    history = fitted.em(x, max_iter=3000, tol=1e-12)
    assert history.converged
    assert abs(history.objective[-1] - ll_ml) < 1e-3
    assert history.objective[-1] <= ll_ml + 1e-6  # the closed form is the maximum
    # W is identified up to a rotation R: compare W W^T, and sigma^2.
    ww_em = fitted.W.detach().double() @ fitted.W.detach().double().T
    ww_ml = exact.W.detach().double() @ exact.W.detach().double().T
    assert float((ww_em - ww_ml).norm() / ww_ml.norm()) < 1e-3
    assert abs(fitted.sigma2 - exact.sigma2) < 1e-4 * exact.sigma2
    # And the closed form is a maximum: a perturbed W is worse.
    with torch.no_grad():
        exact.W.mul_(1.05)
    assert float(exact.log_marginal(x.double()).detach().mean()) < ll_ml - 1e-4


def test_closed_form_eigenvalues():
    """TB99 eq. 8: sigma^2 = mean of the discarded eigenvalues of S."""
    model = _randomise(PPCA(D, Q).double())
    x = _sample(model, 2000)
    fitted = PPCA(D, Q).double()
    fitted.closed_form_ml(x)
    evals = torch.linalg.eigvalsh(torch.cov(x.T, correction=0)).flip(0)
    assert abs(fitted.sigma2 - float(evals[Q:].mean())) < 1e-10
    ww = fitted.W.detach() @ fitted.W.detach().T
    torch.testing.assert_close(torch.linalg.eigvalsh(ww).flip(0)[:Q], evals[:Q] - fitted.sigma2)
    # Samples of the true model: the ML fit's covariance is close to the truth's.
    truth = _covariance(model)
    assert float((_covariance(fitted) - truth).norm() / truth.norm()) < 0.1


# ---------------------------------------------------------------- mean-field


@pytest.fixture(scope="module")
def mean_field_fits(digits):
    x = digits[0][:400].double()
    fits = {}
    for cls in MODELS:
        model = cls(64, 5).double()
        fits[cls] = (model, model.mean_field(x, max_iter=60, tol=0.0))
    return x, fits


def test_mean_field_elbo_never_decreases(model_cls, mean_field_fits):
    x, fits = mean_field_fits
    model, history = fits[model_cls]
    elbo = np.array(history.objective)
    assert history.iterations == 60
    assert np.all(np.diff(elbo) >= -1e-9 * np.abs(elbo[:-1])), np.diff(elbo).min()
    assert elbo[-1] > elbo[0] + 1.0
    # The recorded objective is the closed-form ELBO of the stored q and parameters.
    state = model.mf_state
    assert state.loc.shape == (x.shape[0], 5) and state.scale.shape == (5,)
    per_point = model.mean_field_elbo(x, state.loc, state.scale)
    assert abs(float(per_point.mean()) - elbo[-1]) < 1e-8


def test_mean_field_first_e_step_variances(model_cls, digits):
    """The E-step sets s_j^2 = 1 / Lambda_jj of the parameters it starts from."""
    x = digits[0][:200].double()
    start = model_cls(64, 4).double()
    start.init_from_data(x, seed=5)
    W, psi = start.W.detach(), start.noise_variance().detach()
    lam = torch.eye(4, dtype=torch.float64) + W.T @ (W / psi.unsqueeze(-1))
    fitted = model_cls(64, 4).double()
    fitted.mean_field(x, max_iter=1, seed=5)
    torch.testing.assert_close(fitted.mf_state.scale.square(), 1.0 / torch.diagonal(lam))


def test_mean_field_inner_sweeps(model_cls, digits):
    x = digits[0][:200].double()
    history = model_cls(64, 4).double().mean_field(x, max_iter=20, inner_sweeps=3, tol=0.0)
    elbo = np.array(history.objective)
    assert np.all(np.diff(elbo) >= -1e-9 * np.abs(elbo[:-1]))


def test_mean_field_bounds_below_log_likelihood(model_cls, mean_field_fits):
    x, fits = mean_field_fits
    model, _ = fits[model_cls]
    exact = model.log_marginal(x).detach()
    assert torch.all(model.mean_field_elbo(x, model.mf_state.loc, model.mf_state.scale) <= exact)
    cavi = model.mean_field_elbo(x)
    assert torch.all(cavi <= exact + 1e-10)
    assert float((exact - cavi).mean()) > 1e-6  # a strict gap: the posterior is correlated


def test_mean_field_underestimates_variance(model_cls, mean_field_fits):
    x, fits = mean_field_fits
    model, _ = fits[model_cls]
    loc, scale = model.mean_field_posterior(x, sweeps=500)
    post = model.exact_posterior(x)
    exact_var = torch.diagonal(post.covariance_matrix[0])
    assert torch.all(scale[0].square() <= exact_var + 1e-12)
    torch.testing.assert_close(scale[0].square(), 1.0 / torch.diagonal(post.precision_matrix[0]))
    # The coordinate-ascent fixed point gets the mean right (PRML 10.1.2).
    torch.testing.assert_close(loc, post.loc, rtol=1e-6, atol=1e-6)


def test_mean_field_elbo_matches_monte_carlo(model_cls, digits):
    train, test = digits
    model = model_cls(64, 5)
    model.mean_field(train, max_iter=30)
    x = test[:40]
    bounds = model.mean_field_bounds(x, k=200)
    assert bounds.k == 200 and bounds.log_weights.shape == (40, 200)
    closed = model.mean_field_elbo(x).double()
    se = bounds.log_weights.double().std(dim=1) / math.sqrt(200)
    diff = bounds.elbo.double() - closed
    assert float(diff.abs().max()) < 5 * float(se.max()) + 1e-3
    assert abs(float(diff.mean())) < 5 * float(se.norm() / 40) + 1e-4
    exact = model.log_marginal(x).detach().double()
    assert float((bounds.iwae.double() - exact).mean()) < 0.05
    assert float(bounds.iwae.mean()) >= float(bounds.elbo.mean())


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("latent_dim", [0, -1, D, D + 3, 2.5, True])
def test_bad_latent_dim(model_cls, latent_dim):
    with pytest.raises(PplGenError, match="latent_dim"):
        model_cls(D, latent_dim)


def test_bad_width(model_cls):
    model = model_cls(D, Q)
    bad = torch.randn(10, D + 1)
    for call in (
        model.log_marginal,
        model.exact_posterior,
        model.em,
        model.mean_field,
        model.mean_field_posterior,
        model.init_from_data,
        model,
    ):
        with pytest.raises(PplGenError, match="x: each row must have 7 values"):
            call(bad)
    with pytest.raises(PplGenError, match="x:"):
        model.em(torch.randn(D))
    with pytest.raises(PplGenError, match="NaN"):
        model.em(torch.full((4, D), float("nan")))


def test_bad_fit_arguments(model_cls):
    model = model_cls(D, Q)
    x = torch.randn(20, D)
    with pytest.raises(PplGenError, match="max_iter"):
        model.em(x, max_iter=0)
    with pytest.raises(PplGenError, match="tol"):
        model.mean_field(x, tol=-1.0)
    with pytest.raises(PplGenError, match="inner_sweeps"):
        model.mean_field(x, inner_sweeps=0)


def test_forward_uses_data_dtype(model_cls):
    """The prior is built on x's dtype: the model runs on float64 data with float32 params."""
    model = model_cls(D, Q)
    x = torch.randn(3, D, dtype=torch.float64)
    trace = poutine.trace(model).get_trace(x)
    assert trace.nodes["z"]["value"].dtype == torch.float64
    assert isinstance(trace.nodes["z"]["fn"], dist.Independent)
