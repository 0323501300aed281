"""Tests for ppl_gen.infer.bounds: per-datapoint ELBO and IWAE-K against an exact log p(x).

The reference model is linear-Gaussian, ``z ~ N(0, I_2)``, ``x | z ~ N(W z + b, s^2 I_5)``,
whose marginal ``x ~ N(b, W W^T + s^2 I)`` and posterior are known in closed form, so the
bounds can be checked against the truth rather than against each other.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO

from ppl_gen.core.errors import PplGenError
from ppl_gen.guides import AmortisedGaussianGuide, MeanFieldGuide
from ppl_gen.infer.bounds import BoundEstimate, evaluate_bounds, log_importance_weights
from ppl_gen.lvm.plates import data_plate
from ppl_gen.models import VAE

D, Z = 5, 2


class LinearGaussian:
    """Hand-written Pyro model ``z ~ N(0, I)``, ``x | z ~ N(W z + b, sigma^2 I)``.

    Every tensor is built on ``x``'s device and dtype.  With ``orthogonal=True`` the columns
    of ``W`` are orthogonal, so the exact posterior is a diagonal Gaussian (representable by
    a mean-field guide).
    """

    def __init__(self, orthogonal: bool = False, sigma: float = 0.5) -> None:
        g = torch.Generator().manual_seed(1)
        w = torch.randn(D, Z, generator=g, dtype=torch.float64)
        if orthogonal:
            q, _ = torch.linalg.qr(w)
            w = q * torch.tensor([2.0, 0.7], dtype=torch.float64)
        self.w = w
        self.b = torch.randn(D, generator=g, dtype=torch.float64)
        self.sigma = sigma

    def params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.w.to(x), self.b.to(x)

    def __call__(self, x, indices=None, size=None):
        w, b = self.params(x)
        with data_plate(x, indices, size):
            zeros = x.new_zeros(Z)
            z = pyro.sample("z", dist.Normal(zeros, torch.ones_like(zeros)).to_event(1))
            pyro.sample("x", dist.Normal(z @ w.T + b, self.sigma).to_event(1), obs=x)

    def sample(self, n: int, dtype=torch.float64) -> torch.Tensor:
        g = torch.Generator().manual_seed(2)
        z = torch.randn(n, Z, generator=g, dtype=torch.float64)
        x = z @ self.w.T + self.b + self.sigma * torch.randn(n, D, generator=g, dtype=torch.float64)
        return x.to(dtype)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x_i)``, ``(N,)``, in float64."""
        w, b = self.w, self.b
        cov = w @ w.T + self.sigma**2 * torch.eye(D, dtype=torch.float64)
        return dist.MultivariateNormal(b, covariance_matrix=cov).log_prob(x.double())

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact posterior ``p(z | x_i) = N(mu_i, Sigma)``: ``mu (N, Z)``, ``Sigma (Z, Z)``."""
        w, b = self.params(x)
        s2 = self.sigma**2
        cov = torch.linalg.inv(torch.eye(Z, dtype=x.dtype, device=x.device) + w.T @ w / s2)
        mu = (x - b) @ w / s2 @ cov
        return mu, cov


def gaussian_guide(lg: LinearGaussian, inflate: float = 1.0):
    """Hand-written guide: exact posterior mean, posterior scale multiplied by ``inflate``."""

    def guide(x, indices=None, size=None):
        mu, cov = lg.posterior(x)
        tril = inflate * torch.linalg.cholesky(cov)
        with data_plate(x, indices, size):
            pyro.sample("z", dist.MultivariateNormal(mu, scale_tril=tril))

    return guide


@pytest.fixture
def lg() -> LinearGaussian:
    return LinearGaussian()


@pytest.fixture
def lg_data(lg) -> torch.Tensor:
    return lg.sample(200)


@pytest.fixture(scope="module")
def binary_data() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return (torch.rand(200, 64, generator=g) < 0.3).float()


@pytest.fixture
def vae_pair():
    torch.manual_seed(0)
    model = VAE(64, latent_dim=4, hidden=(32,))
    guide = AmortisedGaussianGuide(model, hidden=(32,))
    return model, guide


# ----------------------------------------------------------------------------------------
# Exact log p(x): the linear-Gaussian model


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_posterior_guide_gives_constant_weights_equal_to_log_marginal(lg, lg_data, dtype):
    x = lg_data.to(dtype)
    exact = lg.log_marginal(x)
    est = evaluate_bounds(lg, gaussian_guide(lg), x, k=50, keep_log_weights=True)
    tol = 1e-4 if dtype == torch.float32 else 1e-8
    assert est.log_weights.shape == (x.shape[0], 50)
    assert torch.allclose(est.log_weights.double(), exact[:, None].expand(-1, 50), atol=tol)
    assert torch.allclose(est.elbo.double(), exact, atol=tol)
    assert torch.allclose(est.iwae.double(), exact, atol=tol)


def test_iwae_approaches_log_marginal_as_k_grows(lg, lg_data):
    exact = lg.log_marginal(lg_data)
    guide = gaussian_guide(lg, inflate=2.0)
    ks = (1, 10, 100, 1000, 5000)
    gaps = {}
    for k in ks:
        gaps[k] = exact - evaluate_bounds(lg, guide, lg_data, k=k).iwae.double()
    means = [float(gaps[k].mean()) for k in ks]
    # K = 1 is the ELBO: the gap is KL(q || p(z|x)) = 2 * 0.5 * (4 - 1 - ln 4) nats.
    kl = 2 * 0.5 * (4.0 - 1.0 - math.log(4.0))
    assert means[0] == pytest.approx(kl, abs=0.25)
    # The gap shrinks with K, up to Monte Carlo error of the paired differences.
    for a, b in zip(ks, ks[1:], strict=False):
        diff = gaps[b] - gaps[a]
        se = float(diff.std() / math.sqrt(diff.numel()))
        assert float(diff.mean()) <= 3 * se + 1e-3, (a, b, means)
    assert means[0] > means[2] + 0.5
    assert abs(means[-1]) < 0.05
    assert abs(means[-1]) < abs(means[1])


def test_elbo_below_exact_log_marginal_for_every_datapoint(lg, lg_data):
    exact = lg.log_marginal(lg_data)
    est = evaluate_bounds(lg, gaussian_guide(lg, inflate=2.0), lg_data, k=2000)
    assert torch.all(est.elbo.double() < exact)
    assert torch.all(est.elbo <= est.iwae)
    # The ELBO gap is KL(q || posterior), identical for every datapoint here.
    assert float((exact - est.elbo.double()).mean()) == pytest.approx(1.6137, abs=0.05)


def test_untrained_amortised_guide_gives_valid_bounds_on_linear_gaussian(lg, lg_data):
    x = lg_data.float()
    guide = AmortisedGaussianGuide(lg, hidden=(16,))
    exact = lg.log_marginal(x)
    est = evaluate_bounds(lg, guide, x, k=500)
    assert guide.shapes == {"z": (Z,)}
    assert torch.all(est.elbo.double() < exact)
    assert est.iwae_mean > est.elbo_mean
    assert est.iwae_mean < float(exact.mean())


@pytest.mark.parametrize("inflate", [1.0, 2.0])
def test_agrees_with_pyro_renyi_elbo_on_one_datapoint(lg, lg_data, inflate):
    """Pyro's RenyiELBO(alpha=0) is the IWAE bound of its (whole) batch: for one datapoint
    without subsampling it must match our per-datapoint IWAE."""
    x = lg_data[:1]
    guide = gaussian_guide(lg, inflate)
    k = 4000
    renyi = RenyiELBO(alpha=0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    pyro_iwae = -renyi.loss(lg, guide, x)
    ours = evaluate_bounds(lg, guide, x, k=k).iwae_mean
    exact = float(lg.log_marginal(x))
    tol = 1e-4 if inflate == 1.0 else 0.05
    assert pyro_iwae == pytest.approx(exact, abs=tol)
    assert ours == pytest.approx(pyro_iwae, abs=tol)


def test_pyro_renyi_elbo_sums_and_scales_the_batch_where_ours_is_per_datapoint(lg, lg_data):
    """Why ppl_gen has its own evaluator: Pyro's bound is of the (scaled) batch."""
    x = lg_data[:8]
    exact = lg.log_marginal(x)
    guide = gaussian_guide(lg)
    renyi = RenyiELBO(alpha=0, num_particles=5, vectorize_particles=True, max_plate_nesting=1)
    assert -renyi.loss(lg, guide, x, size=80) == pytest.approx(10 * float(exact.sum()), abs=1e-3)
    lw = log_importance_weights(lg, guide, x, 5, size=80)
    assert torch.allclose(lw.double(), exact.expand(5, -1), atol=1e-6)


# ----------------------------------------------------------------------------------------
# Ordering of the bounds on a VAE


def test_iwae_at_least_elbo_per_datapoint_and_nondecreasing_in_k(vae_pair, binary_data):
    model, guide = vae_pair
    results = {}
    for k in (1, 5, 50, 500):
        pyro.set_rng_seed(k)
        results[k] = evaluate_bounds(model, guide, binary_data, k=k)
    one = results[1]
    # One sample: IWAE-1 and the ELBO are the same number.
    assert torch.allclose(one.iwae, one.elbo, atol=1e-5)
    for k in (5, 50, 500):
        est = results[k]
        # Same samples: log-mean-exp >= mean (Jensen), for every datapoint.
        assert torch.all(est.iwae >= est.elbo - 1e-4)
        assert est.iwae_mean > est.elbo_mean + 1e-3
    for a, b in ((1, 5), (5, 50), (50, 500)):
        diff = results[b].iwae - results[a].iwae
        se = float(diff.std() / math.sqrt(diff.numel()))
        assert float(diff.mean()) >= -3 * se, (a, b)
    assert results[500].iwae_mean > results[1].iwae_mean + 0.05


def test_bound_estimate_summary(vae_pair, binary_data):
    model, guide = vae_pair
    est = evaluate_bounds(model, guide, binary_data[:10], k=3)
    assert isinstance(est, BoundEstimate)
    assert est.elbo.shape == est.iwae.shape == (10,)
    assert est.log_weights is None
    summary = est.summary()
    assert set(summary) == {"elbo", "elbo_se", "iwae", "iwae_se", "k"}
    assert summary["k"] == 3
    assert summary["elbo"] == pytest.approx(float(est.elbo.mean()))
    assert summary["iwae_se"] == pytest.approx(float(est.iwae.std() / math.sqrt(10)))
    single = evaluate_bounds(model, guide, binary_data[:1], k=3)
    assert math.isnan(single.elbo_se)


# ----------------------------------------------------------------------------------------
# Subsampling and chunking leave the per-datapoint bounds unchanged


@pytest.mark.parametrize("size", [200, 10_000])
def test_log_weights_unscaled_under_subsampling(vae_pair, binary_data, size):
    model, guide = vae_pair
    x = binary_data[:16]
    pyro.set_rng_seed(5)
    plain = log_importance_weights(model, guide, x, 7)
    pyro.set_rng_seed(5)
    scaled = log_importance_weights(model, guide, x, 7, size=size)
    assert plain.shape == scaled.shape == (7, 16)
    assert torch.equal(plain, scaled)


def test_evaluate_bounds_unscaled_under_subsampling(vae_pair, binary_data):
    model, guide = vae_pair
    x = binary_data[:20]
    pyro.set_rng_seed(5)
    full = evaluate_bounds(model, guide, x, k=10)
    pyro.set_rng_seed(5)
    sub = evaluate_bounds(model, guide, x, k=10, size=5000)
    assert torch.equal(full.iwae, sub.iwae)
    assert torch.equal(full.elbo, sub.elbo)


@pytest.mark.parametrize(
    "batch_size, max_samples",
    [(None, 50_000), (7, 50_000), (200, 64), (3, 5), (1, 1)],
)
def test_chunking_does_not_change_exact_bounds(lg, lg_data, batch_size, max_samples):
    x = lg_data[:30]
    exact = lg.log_marginal(x)
    est = evaluate_bounds(
        lg,
        gaussian_guide(lg),
        x,
        k=20,
        batch_size=batch_size,
        max_samples_per_chunk=max_samples,
        keep_log_weights=True,
    )
    assert est.iwae.shape == est.elbo.shape == (30,)
    assert est.log_weights.shape == (30, 20)
    assert torch.allclose(est.iwae.double(), exact, atol=1e-8)
    assert torch.allclose(est.elbo.double(), exact, atol=1e-6)
    assert torch.allclose(est.log_weights.double(), exact[:, None].expand(-1, 20), atol=1e-8)


@pytest.mark.parametrize("batch_size, max_samples", [(7, 50_000), (50, 100), (200, 16)])
def test_chunking_agrees_within_mc_error(lg, lg_data, batch_size, max_samples):
    guide = gaussian_guide(lg, inflate=2.0)
    pyro.set_rng_seed(0)
    ref = evaluate_bounds(lg, guide, lg_data, k=200)
    pyro.set_rng_seed(1)
    other = evaluate_bounds(
        lg, guide, lg_data, k=200, batch_size=batch_size, max_samples_per_chunk=max_samples
    )
    for a, b in ((ref.iwae, other.iwae), (ref.elbo, other.elbo)):
        diff = (a - b).double()
        se = float(diff.std() / math.sqrt(diff.numel()))
        assert abs(float(diff.mean())) < 4 * se + 1e-3
        # Row i is datapoint i in both runs: the differences are small next to the spread
        # of the bounds across datapoints.
        assert float(diff.std()) < 0.3 * float(a.std())


def test_mean_field_guide_rows_follow_indices(binary_data):
    """With the exact (diagonal) posterior in the guide's table, weights are constant only
    if every row of x meets its own table row, in any order and any chunking."""
    lg = LinearGaussian(orthogonal=True)
    x = lg.sample(12)
    mu, cov = lg.posterior(x)
    assert torch.allclose(cov, torch.diag(torch.diagonal(cov)), atol=1e-12)
    guide = MeanFieldGuide(lg, num_data=12, min_scale=1e-4)
    guide.setup(x[:1])
    guide.double()
    std = torch.diagonal(cov).sqrt()
    with torch.no_grad():
        guide.locs["z"].copy_(mu)
        guide.raw_scales["z"].copy_((std - 1e-4).expm1().log().expand(12, -1))
    exact = lg.log_marginal(x)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    est = evaluate_bounds(lg, guide, x[perm], k=9, indices=perm, size=12, batch_size=5)
    assert torch.allclose(est.iwae.double(), exact[perm], atol=1e-8)
    assert torch.allclose(est.elbo.double(), exact[perm], atol=1e-6)
    wrong = evaluate_bounds(lg, guide, x[perm], k=9, size=12, batch_size=5)
    assert not torch.allclose(wrong.iwae.double(), exact[perm], atol=1e-3)


# ----------------------------------------------------------------------------------------
# Vectorisation, shapes and errors


@pytest.mark.parametrize("k", [1, 3, 64])
def test_k_samples_drawn_in_one_vectorised_pass(vae_pair, binary_data, k):
    model, guide = vae_pair
    x = binary_data[:10]
    calls = []

    def counting_guide(*args, **kwargs):
        calls.append(1)
        return guide(*args, **kwargs)

    lw = log_importance_weights(model, counting_guide, x, k, max_plate_nesting=1)
    assert len(calls) == 1
    assert lw.shape == (k, 10)
    assert torch.isfinite(lw).all()
    if k > 1:
        # Different samples per particle: no two rows of log-weights coincide.
        assert torch.unique(lw, dim=0).shape[0] == k
        assert (lw.std(0) > 0).all()


def test_keep_log_weights_shape_and_consistency(vae_pair, binary_data):
    model, guide = vae_pair
    x = binary_data[:13]
    est = evaluate_bounds(
        model, guide, x, k=11, batch_size=4, max_samples_per_chunk=12, keep_log_weights=True
    )
    lw = est.log_weights
    assert lw.shape == (13, 11)
    assert torch.allclose(est.iwae, torch.logsumexp(lw, 1) - math.log(11), atol=1e-4)
    assert torch.allclose(est.elbo, lw.mean(1), atol=1e-4)
    assert est.k == 11


def _model_with_global(x, indices=None, size=None):
    g = pyro.sample("global_shift", dist.Normal(x.new_zeros(()), 1.0))
    with data_plate(x, indices, size):
        z = pyro.sample("z", dist.Normal(x.new_zeros(Z), 1.0).to_event(1))
        loc = (z.sum(-1) + g).unsqueeze(-1)
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)


def _guide_with_global(x, indices=None, size=None):
    pyro.sample("global_shift", dist.Normal(x.new_zeros(()), 1.0))
    with data_plate(x, indices, size):
        pyro.sample("z", dist.Normal(x.new_zeros(Z), 1.0).to_event(1))


@pytest.mark.parametrize("via", ["log_importance_weights", "evaluate_bounds"])
def test_latent_outside_data_plate_raises(via):
    x = torch.randn(4, 1)
    with pytest.raises(PplGenError, match="global_shift"):
        if via == "evaluate_bounds":
            evaluate_bounds(_model_with_global, _guide_with_global, x, k=3)
        else:
            log_importance_weights(_model_with_global, _guide_with_global, x, 3)


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
@pytest.mark.parametrize("via", ["log_importance_weights", "evaluate_bounds"])
def test_bad_k_raises(vae_pair, binary_data, k, via):
    model, guide = vae_pair
    with pytest.raises(PplGenError, match="iwae_k must be a positive integer"):
        if via == "evaluate_bounds":
            evaluate_bounds(model, guide, binary_data[:3], k=k)
        else:
            log_importance_weights(model, guide, binary_data[:3], k)


def test_empty_data_raises(vae_pair):
    model, guide = vae_pair
    with pytest.raises(PplGenError, match="no datapoints"):
        evaluate_bounds(model, guide, torch.zeros(0, 64), k=3)


def test_evaluate_bounds_does_not_build_a_graph(vae_pair, binary_data):
    model, guide = vae_pair
    est = evaluate_bounds(model, guide, binary_data[:5], k=4, keep_log_weights=True)
    for t in (est.elbo, est.iwae, est.log_weights):
        assert not t.requires_grad
        assert t.device.type == "cpu"
