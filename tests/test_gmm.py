"""The Gaussian mixture: exact marginal and posterior, Pyro model, EM and variational Bayes.

EM and the variational Bayesian mixture are checked against scikit-learn started from the
same parameters (same update sequence, so they agree to rounding), and their objectives
must never decrease.
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, TraceEnum_ELBO
from pyro.optim import Adam
from sklearn.mixture import BayesianGaussianMixture
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn_bridge import set_from_sklearn, to_sklearn_init
from threadpoolctl import threadpool_limits

from ppl_gen.core.errors import PplGenError
from ppl_gen.infer.bounds import evaluate_bounds
from ppl_gen.lvm.plates import data_plate
from ppl_gen.models import GaussianMixture
from ppl_gen.models.gmm import ComponentGaussian, kmeans_plusplus

K, D = 3, 3


def _mixture_data(n: int = 600, k: int = K, d: int = D, draw: int = 0) -> torch.Tensor:
    """Overlapping, anisotropic Gaussian clusters, float32 ``(n, d)``; ``draw`` seeds the rows."""
    g = torch.Generator().manual_seed(0)
    means = 2.0 * torch.randn(k, d, generator=g)
    mix = 0.6 * torch.randn(k, d, d, generator=g)
    g = torch.Generator().manual_seed(1000 + draw)
    c = torch.randint(k, (n,), generator=g)
    noise = torch.randn(n, 1, d, generator=g)
    return (means[c] + (noise @ mix[c].transpose(-1, -2)).squeeze(1)).float()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return _mixture_data()


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """scikit-learn's numpy BLAS on one thread: these problems are tiny, and on a busy
    machine a BLAS thread pool mostly waits for descheduled workers."""
    with threadpool_limits(1):
        yield


def _random_model(covariance: str, seed: int = 1) -> GaussianMixture:
    model = GaussianMixture(D, K, covariance)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.logits.copy_(torch.randn(K, generator=g))
        model.means.copy_(2.0 * torch.randn(K, D, generator=g))
        if covariance == "full":
            model.scale_tril_raw.copy_(0.4 * torch.randn(K, D, D, generator=g))
        else:
            model.log_scales.copy_(0.4 * torch.randn(K, D, generator=g))
    return model


def _torch_log_joint(model: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` ``log pi_k + log N(x | mu_k, Sigma_k)`` with torch's MultivariateNormal."""
    model64 = copy.deepcopy(model).double()
    with torch.no_grad():
        log_w = torch.log_softmax(model64.logits, -1)
        comps = dist.MultivariateNormal(model64.means, covariance_matrix=model64.covariances())
        return comps.log_prob(x.double().unsqueeze(1)) + log_w


def _empty_guide(x, indices=None, size=None):
    pass


# ------------------------------------------------------------------ exact inference


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_log_marginal_matches_torch(x, covariance):
    model = _random_model(covariance)
    expected = torch.logsumexp(_torch_log_joint(model, x), dim=1)
    got = model.log_marginal(x)
    assert got.shape == (x.shape[0],) and got.dtype == x.dtype
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(model.log_marginal(x.double()), expected, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_exact_posterior_is_bayes_rule(x, covariance):
    model = _random_model(covariance)
    posterior = model.exact_posterior(x)
    assert posterior.batch_shape == (x.shape[0],)
    probs = posterior.probs.double()
    torch.testing.assert_close(probs.sum(1), torch.ones(x.shape[0], dtype=torch.float64))
    joint = _torch_log_joint(model, x)
    bayes = torch.exp(joint - torch.logsumexp(joint, 1, keepdim=True))
    torch.testing.assert_close(probs, bayes, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_enumerated_elbo_is_exact_log_likelihood(x, covariance):
    model = _random_model(covariance)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    loss = elbo.loss(model, _empty_guide, x)
    exact = -float(model.log_marginal(x.double()).sum())
    assert abs(loss - exact) <= 1e-3 * abs(exact)
    # ... and SVI on it maximises the likelihood: every parameter gets a gradient.
    svi = SVI(model, _empty_guide, Adam({"lr": 0.05}), elbo)
    losses = [svi.step(x[:200]) for _ in range(10)]
    assert losses[-1] < losses[0]
    assert all(p.grad is not None for p in model.parameters())


def test_model_vectorises_over_particles(x):
    model = _random_model("full")
    xb = x[:7]

    def guide(xs, indices=None, size=None):
        with data_plate(xs, indices, size):
            pyro.sample("c", model.exact_posterior(xs))

    with pyro.plate("particles", 5, dim=-2):
        guide_trace = pyro.poutine.trace(guide).get_trace(xb)
        trace = pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_trace)).get_trace(xb)
    assert trace.nodes["c"]["value"].shape == (5, 7)
    assert trace.nodes["x"]["fn"].batch_shape == (5, 7)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_component_likelihood_matches_gathered_mvn(x, covariance):
    model = _random_model(covariance)
    xb = x[:7]
    c = torch.randint(K, (5, 7))
    chol = model.scale_tril().detach()
    if covariance == "full":
        px = ComponentGaussian(c, model.means.detach(), chol)
    else:
        px = ComponentGaussian(c, model.means.detach(), model.log_scales.exp().detach(), True)
    expected = dist.MultivariateNormal(model.means.detach()[c], scale_tril=chol[c]).log_prob(xb)
    torch.testing.assert_close(px.log_prob(xb), expected, rtol=1e-5, atol=1e-5)
    enumerated = px.expand((5, 7))
    assert enumerated.log_prob(xb).shape == (5, 7)
    # enumeration shape: c (K, 1) against N rows gives (K, N)
    labels = torch.arange(K).reshape(K, 1)
    table = ComponentGaussian(labels, px.means, px.scale, px.diag).log_prob(xb)
    torch.testing.assert_close(table, px.component_log_prob(xb).T)
    assert px.sample((3,)).shape == (3, 5, 7, D)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_bounds_with_exact_posterior_equal_log_marginal(x, covariance):
    from ppl_gen.guides.exact import ExactPosteriorGuide

    model = _random_model(covariance)
    xb = x[:50]
    bounds = evaluate_bounds(model, ExactPosteriorGuide(model), xb, k=20)
    exact = model.log_marginal(xb)
    torch.testing.assert_close(bounds.elbo, exact, rtol=0, atol=1e-4)
    torch.testing.assert_close(bounds.iwae, exact, rtol=0, atol=1e-4)


# ------------------------------------------------------------------ EM


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_em_log_likelihood_never_decreases(x, covariance):
    model = GaussianMixture(D, K, covariance)
    history = model.em(x, max_iter=100, tol=0.0, seed=3)
    ll = np.array(history.objective)
    assert history.iterations == 100 and len(history.seconds) == 100
    assert np.all(np.diff(ll) >= -1e-10)
    assert ll[-1] > history.extra["initial_objective"]
    assert np.all(np.diff(history.seconds) >= 0)
    # The recorded objective is the log-likelihood of the stored (float32) parameters.
    assert abs(float(model.log_marginal(x.double()).mean()) - ll[-1]) < 1e-5


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_em_matches_sklearn_from_same_init(x, covariance):
    model = GaussianMixture(D, K, covariance)
    model.init_from_data(x, seed=0)
    init = to_sklearn_init(model)
    xn = x.double().numpy()
    for max_iter, tol, sk_tol in ((40, 0.0, 0.0), (2000, 1e-12, 1e-12)):
        model_run = GaussianMixture(D, K, covariance)
        model_run.load_state_dict(model.state_dict())
        history = model_run.em(x, max_iter=max_iter, tol=tol, init=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sk = SkGaussianMixture(
                K, covariance_type=covariance, max_iter=max_iter, tol=sk_tol, reg_covar=1e-6, **init
            ).fit(xn)
        assert abs(history.objective[-1] - sk.score(xn)) < 1e-4
        np.testing.assert_allclose(model_run.weights().detach().numpy(), sk.weights_, atol=1e-4)


def test_em_stops_on_relative_tolerance(x):
    model = GaussianMixture(D, K)
    history = model.em(x, max_iter=500, tol=1e-4)
    assert history.converged and history.iterations < 500
    ll = history.objective
    assert abs(ll[-1] - ll[-2]) < 1e-4 * abs(ll[-2])


def test_em_restarts_keep_the_best(x):
    model = GaussianMixture(D, 4)
    history = model.em(x, max_iter=200, tol=1e-8, n_init=3, seed=0)
    restarts = history.extra["restarts"]
    assert len(restarts) == 3 and history.extra["best"] == int(np.argmax(restarts))
    assert history.objective[-1] == max(restarts)
    assert abs(float(model.log_marginal(x.double()).mean()) - max(restarts)) < 1e-5
    # each restart alone reproduces its entry (seeds seed, seed + 1, ...)
    for r, final in enumerate(restarts):
        single = GaussianMixture(D, 4).em(x, max_iter=200, tol=1e-8, seed=r)
        assert single.objective[-1] == pytest.approx(final, abs=1e-12)


def test_kmeans_plusplus_is_seeded(x):
    a = kmeans_plusplus(x.double(), 5, torch.Generator().manual_seed(1))
    b = kmeans_plusplus(x.double(), 5, torch.Generator().manual_seed(1))
    c = kmeans_plusplus(x.double(), 5, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(set(a.tolist())) == 5
    resp = GaussianMixture(D, K).initial_responsibilities(x, seed=0)
    assert torch.equal(resp.sum(1), torch.ones(x.shape[0], dtype=torch.float64))


def test_set_from_sklearn_round_trip(x):
    xn = x.double().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = SkGaussianMixture(K, random_state=0).fit(xn)
    model = GaussianMixture(D, K)
    set_from_sklearn(model, sk)
    assert abs(float(model.log_marginal(x.double()).mean()) - sk.score(xn)) < 1e-5


def test_row_chunked_passes_match_one_pass(x, monkeypatch):
    """Large-D problems build the feature rows chunk by chunk; the results must not change."""
    from ppl_gen.models import gmm_features

    whole = GaussianMixture(D, K)
    h_whole = whole.em(x, max_iter=15, tol=0.0)
    ll_whole = whole.log_marginal(x)
    whole.mean_field(x, max_iter=5, tol=0.0)
    monkeypatch.setattr(gmm_features, "_DESIGN_BUDGET", 100)
    monkeypatch.setattr(gmm_features, "_CHUNK_ENTRIES", 7 * 13)  # 7 rows per chunk
    chunked = GaussianMixture(D, K)
    h_chunked = chunked.em(x, max_iter=15, tol=0.0)
    np.testing.assert_allclose(h_chunked.objective, h_whole.objective, rtol=1e-12)
    torch.testing.assert_close(chunked.log_marginal(x), ll_whole)
    chunked.mean_field(x, max_iter=5, tol=0.0)
    b_whole = whole.mean_field_bounds(x[:40], k=30)
    b_chunked = chunked.mean_field_bounds(x[:40], k=30)
    torch.testing.assert_close(b_chunked.iwae, b_whole.iwae, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        chunked.mean_field_predictive(x[:40]), whole.mean_field_predictive(x[:40])
    )


# ------------------------------------------------------------------ variational Bayes


def _sklearn_vb_loop(xn: np.ndarray, resp: np.ndarray, iters: int, reg: float):
    """scikit-learn's BayesianGaussianMixture fit loop, started from ``resp``."""
    bgm = BayesianGaussianMixture(
        n_components=resp.shape[1],
        covariance_type="full",
        weight_concentration_prior_type="dirichlet_distribution",
        reg_covar=reg,
    )
    bgm._check_parameters(xn)
    bgm._initialize(xn, resp)
    bounds = []
    for _ in range(iters):
        log_prob_norm, log_resp = bgm._e_step(xn)
        bgm._m_step(xn, log_resp)
        bounds.append(bgm._compute_lower_bound(log_resp, log_prob_norm))
    bgm._set_parameters(bgm._get_parameters())  # derives weights_ as fit() does
    return bgm, np.array(bounds)


def test_mean_field_matches_sklearn_and_never_decreases(x):
    n = x.shape[0]
    model = GaussianMixture(D, 4)
    resp = model.initial_responsibilities(x, seed=0)
    history = model.mean_field(x, resp=resp, max_iter=60, tol=0.0)
    elbo = np.array(history.objective)
    assert np.all(np.diff(elbo) >= -1e-10)
    bgm, sk_bounds = _sklearn_vb_loop(x.double().numpy(), resp.numpy(), 60, 1e-6)
    ours = np.array(history.extra["lower_bound_sklearn"])
    assert np.max(np.abs(ours - sk_bounds)) / n < 1e-3
    assert abs(model.mean_field_lower_bound_sklearn_convention() - sk_bounds[-1]) / n < 1e-3
    # q(theta) and the point estimates are scikit-learn's
    vb = model.vb
    np.testing.assert_allclose(vb.alpha.numpy(), bgm.weight_concentration_, rtol=1e-6)
    np.testing.assert_allclose(vb.nu.numpy(), bgm.degrees_of_freedom_, rtol=1e-6)
    np.testing.assert_allclose(vb.m.numpy(), bgm.means_, atol=1e-5)
    np.testing.assert_allclose(model.weights().detach().numpy(), bgm.weights_, atol=1e-6)
    np.testing.assert_allclose(
        model.covariances().detach().numpy(), bgm.covariances_, rtol=1e-4, atol=1e-5
    )
    # the full bound (PRML 10.70) = sklearn's + the documented constants + reg_covar term
    full = history.objective[-1] * n
    offset = model.mean_field_sklearn_offset()
    nk = vb.alpha - vb.prior.alpha0
    reg_term = 0.5 * 1e-6 * float((vb.nu * nk * vb.W.diagonal(dim1=-2, dim2=-1).sum(-1)).sum())
    assert full == pytest.approx(ours[-1] + offset + reg_term, abs=1e-9 * n)


def test_mean_field_offset_is_exact_without_regularisation(x):
    model = GaussianMixture(D, K)
    history = model.mean_field(x, max_iter=20, tol=0.0, reg_covar=0.0)
    n = x.shape[0]
    for full, sk in zip(history.objective, history.extra["lower_bound_sklearn"], strict=True):
        assert full * n == pytest.approx(sk + model.mean_field_sklearn_offset(), abs=1e-8 * n)


def test_mean_field_bounds_and_predictive(x):
    model = GaussianMixture(D, K)
    model.mean_field(x, max_iter=200, tol=1e-8)
    x_test = _mixture_data(200, draw=7)
    bounds = model.mean_field_bounds(x_test, k=300, seed=0)
    assert bounds.elbo.shape == (200,) and bounds.log_weights.shape == (200, 300)
    predictive = model.mean_field_predictive(x_test)
    assert predictive.shape == (200,)
    # per datapoint: ELBO <= log predictive (exact), IWAE within MC error of it
    assert torch.all(bounds.elbo <= predictive + 1e-5)
    assert bounds.elbo_mean <= bounds.iwae_mean + 0.01
    assert bounds.iwae_mean <= float(predictive.mean()) + 0.02
    # the mean log-weight is an unbiased estimate of the closed-form ELBO
    assert abs(float(bounds.log_weights.double().mean()) - bounds.elbo_mean) < 0.02
    # the point estimates make a plain GMM afterwards
    assert math.isfinite(float(model.log_marginal(x_test).mean()))
    again = model.mean_field_bounds(x_test, k=300, seed=0)
    torch.testing.assert_close(again.iwae, bounds.iwae)


def test_mean_field_continues_and_takes_priors(x):
    model = GaussianMixture(D, K)
    first = model.mean_field(x, max_iter=10, tol=0.0)
    more = model.mean_field(x, max_iter=10, tol=0.0, init=False)
    assert more.objective[0] >= first.objective[-1] - 1e-10
    other = GaussianMixture(D, K)
    other.mean_field(x, max_iter=10, tol=0.0, priors={"alpha0": 5.0, "beta0": 0.1})
    assert other.vb.prior.alpha0 == 5.0 and other.vb.prior.beta0 == 0.1
    with pytest.raises(PplGenError, match="unknown keys"):
        other.mean_field(x, max_iter=2, priors={"gamma": 1.0})
    with pytest.raises(PplGenError, match="nu0"):
        other.mean_field(x, max_iter=2, priors={"nu0": 0.5})


# ------------------------------------------------------------------ bad input


def test_bad_input_raises():
    with pytest.raises(PplGenError, match="n_components"):
        GaussianMixture(D, 0)
    with pytest.raises(PplGenError, match="covariance"):
        GaussianMixture(D, K, "foo")
    with pytest.raises(PplGenError):
        GaussianMixture(0, K)
    model = GaussianMixture(D, K)
    with pytest.raises(PplGenError, match="values"):
        model.log_marginal(torch.zeros(4, D + 1))
    with pytest.raises(PplGenError, match="at least"):
        model.em(torch.zeros(2, D))
    with pytest.raises(PplGenError, match="NaN"):
        model.em(torch.full((10, D), float("nan")))
    with pytest.raises(PplGenError, match="mean_field"):
        model.mean_field_bounds(torch.zeros(4, D))
    with pytest.raises(PplGenError, match="covariance"):
        GaussianMixture(D, K, "diag").mean_field(torch.randn(20, D))
    with pytest.raises(PplGenError, match="n_init"):
        model.em(torch.randn(20, D), n_init=0)


def test_mixture_implements_the_tractable_protocol():
    from ppl_gen.lvm.tractable import ExactPosterior, TractableModel

    model = GaussianMixture(D, K)
    assert isinstance(model, TractableModel) and isinstance(model, ExactPosterior)
    assert not isinstance(ComponentGaussian, TractableModel)
