"""AIS (Neal 2001), BDMC (Grosse et al. 2015) and the generator likelihood (Wu et al. 2017).

Exactness checks run on models whose ``log p(x)`` is known in closed form: probabilistic
PCA (:class:`ppl_gen.models.PPCA`), a Gamma-Poisson model (constrained latent, negative
binomial marginal) and a linear generator under the Gaussian observation model.  The unit
tests use short schedules (T <= 100) and so check against the run's own Monte Carlo error
(``3 * mc_se``, plus 0.01 nats); the 0.01 nats/point accuracy of long runs is measured in
``benchmarks/ais_accuracy.py``.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppl_gen
from ppl_gen.core.errors import PplGenError
from ppl_gen.infer.ais import annealing_schedule, evaluate_ais
from ppl_gen.infer.bdmc import bdmc, reference_log_likelihood
from ppl_gen.infer.bounds import evaluate_bounds
from ppl_gen.infer.generator_likelihood import (
    GaussianObservationModel,
    from_generator,
    from_vae_decoder,
    generator_ais_metrics,
    select_sigma,
)
from ppl_gen.models.ppca import PPCA

F64 = torch.float64


@pytest.fixture(scope="module")
def ppca():
    """PPCA (D = 6, Q = 2) fitted in closed form to synthetic data, float64."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 2, generator=g, dtype=F64)
    x = torch.randn(400, 2, generator=g, dtype=F64) @ w.T
    x = x + 0.6 * torch.randn(400, 6, generator=g, dtype=F64)
    model = PPCA(6, 2).double()
    model.closed_form_ml(x)
    return model, x[:8]


class ExactGuide:
    """``q(z | x) = p(z | x)`` widened by ``widen`` and shifted by ``shift`` posterior sds."""

    def __init__(self, model, widen=1.0, shift=0.0):
        self.model, self.widen, self.shift = model, widen, shift

    def __call__(self, x, indices=None, size=None):
        with torch.no_grad():
            post = self.model.exact_posterior(x)
        q = dist.MultivariateNormal(
            post.loc + self.shift * post.stddev, scale_tril=self.widen * post.scale_tril
        )
        with ppl_gen.data_plate(x, indices, size):
            pyro.sample("z", q)


def test_sigmoid_schedule_runs_from_zero_to_one():
    beta = annealing_schedule(10)
    assert beta[0] == 0 and beta[-1] == 1 and bool((beta.diff() > 0).all())
    # more resolution near both ends than in the middle (Grosse et al. 2015, sec. 6.2)
    assert beta.diff()[0] < beta.diff()[5] > beta.diff()[-1]


def test_exact_posterior_start_gives_exact_log_px(ppca):
    """With q0 = p(z|x) every weight is p(x): checks the weight bookkeeping and the guide
    conditioning whatever the HMC moves do."""
    model, x = ppca
    est = evaluate_ais(model, x, ExactGuide(model), steps=5, chains=4, leapfrog=2, seed=0)
    exact = model.log_marginal(x).detach()
    assert torch.allclose(est.log_px.double(), exact, atol=1e-8)
    assert est.log_px.shape == (8,) and est.log_px_se.shape == (8,)


def test_ais_from_the_prior_matches_exact_ppca(ppca):
    model, x = ppca
    est = evaluate_ais(model, x, steps=100, chains=32, leapfrog=4, seed=0)
    err = float((est.log_px.double() - model.log_marginal(x).detach()).mean())
    assert est.mc_se < 0.06
    assert abs(err) < 3 * est.mc_se + 0.01, (err, est.mc_se)
    assert 0.3 < float(est.acceptance.mean()) < 1.0


def test_ais_from_a_poor_guide_beats_importance_sampling_with_it(ppca):
    """AIS-T from a widened, shifted guide is closer to log p(x) than IWAE-C from the same
    guide with C = chains, and both are below it (up to Monte Carlo error)."""
    model, x = ppca
    guide = ExactGuide(model, widen=0.6, shift=1.0)
    exact = model.log_marginal(x).detach()
    iwae = evaluate_bounds(model, guide, x, k=16).iwae.double()
    est = evaluate_ais(model, x, guide, steps=60, chains=16, leapfrog=4, seed=0)
    ais = est.log_px.double()
    assert float((exact - ais).mean()) < float((exact - iwae).mean()) / 3
    assert float((ais - exact).mean()) < 3 * est.mc_se + 0.01


def test_constrained_latent_gamma_poisson():
    """z ~ Gamma(a, b), x | z ~ Poisson(z): log p(x) is negative binomial; z moves in log
    space through biject_to(positive) with its log-Jacobian."""
    a, b = 3.0, 0.5

    def model(x, indices=None, size=None):
        with ppl_gen.data_plate(x, indices, size):
            z = pyro.sample("z", dist.Gamma(torch.tensor(a, dtype=F64), b))
            pyro.sample("x", dist.Poisson(z), obs=x)

    x = torch.tensor([0.0, 2.0, 5.0, 9.0, 14.0], dtype=F64)
    exact = dist.NegativeBinomial(total_count=a, probs=torch.tensor(1 / (1 + b))).log_prob(x)
    est = evaluate_ais(model, x, steps=60, chains=32, leapfrog=4, seed=1)
    err = float((est.log_px - exact).mean())
    assert abs(err) < 3 * est.mc_se + 0.01, (err, est.mc_se)


def test_bdmc_brackets_exact_ppca(ppca):
    model, x = ppca
    res = bdmc(model, x, n=8, steps=60, chains=16, leapfrog=4, seed=0)
    exact = float(model.log_marginal(res.x).detach().mean())
    s = res.summary()
    assert res.x.shape == (8, 6) and s["lower"] <= s["upper"]
    assert s["lower"] - 3 * s["lower_mc_se"] <= exact <= s["upper"] + 3 * s["upper_mc_se"]
    assert res.gap == pytest.approx(s["upper"] - s["lower"])


def test_small_vae_ais_is_at_least_iwae_with_as_many_samples():
    data = ppl_gen.load_dataset("digits", binarize="static", seed=0)
    model = ppl_gen.LatentVariableModel(2, ppl_gen.mlp(2, [32], 64), 64)
    from ppl_gen.guides import AmortisedGaussianGuide

    guide = AmortisedGaussianGuide(model, hidden=(32,))
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
    for _ in range(80):  # a short fit; the check holds for any model and guide
        svi.step(data.train[:256])
    x = data.test[:16]
    iwae = evaluate_bounds(model, guide, x, k=8)
    est = evaluate_ais(model, x, guide, steps=40, chains=8, leapfrog=3, seed=0)
    assert est.mean >= iwae.iwae_mean - 3 * est.mc_se
    ref, method = reference_log_likelihood(model, guide, x, steps=5, chains=2, leapfrog=2)
    assert method == "ais" and ref.shape == (16,)


def test_reference_log_likelihood_is_exact_where_tractable(ppca):
    model, x = ppca
    ref, method = reference_log_likelihood(model, None, x)
    assert method == "exact" and torch.allclose(ref, model.log_marginal(x).detach())


def test_linear_generator_under_gaussian_observation_model_is_ppca():
    """G(z) = W z + mu with N(G(z), sigma^2 I) has log p(x) = N(x; mu, W W^T + sigma^2 I)."""
    g = torch.Generator().manual_seed(2)
    w, mu, sigma = torch.randn(5, 2, generator=g, dtype=F64), torch.rand(5, dtype=F64), 0.7
    model = GaussianObservationModel(lambda z: z @ w.T + mu, 2, 5, sigma)
    cov = w @ w.T + sigma**2 * torch.eye(5, dtype=F64)
    x = dist.MultivariateNormal(mu, cov).sample((6,))
    exact = dist.MultivariateNormal(mu, cov).log_prob(x)
    est = evaluate_ais(model, x, steps=60, chains=32, leapfrog=4, seed=0)
    assert abs(float((est.log_px - exact).mean())) < 3 * est.mc_se + 0.01
    best, scores = select_sigma(model, x, (0.1, 0.7, 5.0), steps=20, chains=8, leapfrog=3)
    assert best == 0.7 and set(scores) == {0.1, 0.7, 5.0}


def test_sigma_refinement_finds_an_optimum_between_grid_points():
    """sigma = 0.7 lies between the grid's 0.35 and 1.4: refinement at ratio 2^(1/4) walks
    from the grid's best towards it and scores higher than the grid alone."""
    g = torch.Generator().manual_seed(3)
    w, mu = torch.randn(5, 2, generator=g, dtype=F64), torch.rand(5, dtype=F64)
    model = GaussianObservationModel(lambda z: z @ w.T + mu, 2, 5, 0.7)
    cov = w @ w.T + 0.49 * torch.eye(5, dtype=F64)
    x = dist.MultivariateNormal(mu, cov).sample((200,))
    grid = (0.35, 1.4)
    coarse, _ = select_sigma(model, x, grid, steps=10, chains=4, leapfrog=3)
    best, scores = select_sigma(model, x, grid, steps=10, chains=4, leapfrog=3, refine=3)
    assert best not in grid and 0.45 < best < 1.1
    assert scores[best] > scores[coarse] and len(scores) <= len(grid) + 6
    with pytest.raises(PplGenError, match="refine must be >= 0"):
        select_sigma(model, x, grid, refine=-1)


def test_gan_generator_and_vae_decoder_on_one_axis():
    from ppl_gen.gan.mlp_gan import MLPGenerator

    gen = MLPGenerator(4, (1, 4, 4), hidden=(8,)).eval()
    x = torch.rand(3, 1, 4, 4)
    out = generator_ais_metrics(gen, x, x, steps=4, chains=2)
    assert math.isfinite(out["test_log_likelihood_ais"]) and out["ais_sigma"] > 0
    vae = ppl_gen.LatentVariableModel(2, ppl_gen.mlp(2, [8], 16), 16)
    est = evaluate_ais(from_vae_decoder(vae, 0.2), x.reshape(3, 16), steps=3, chains=2)
    assert est.log_px.shape == (3,) and bool(torch.isfinite(est.log_px).all())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"steps": 0}, "steps"),
        ({"chains": -1}, "chains"),
        ({"leapfrog": 0}, "leapfrog"),
        ({"step_size": 0.0}, "step_size"),
        ({"target_accept": 1.5}, "target_accept"),
        ({"schedule": "cosine"}, "schedule"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments_name_themselves(ppca, kwargs, name):
    model, x = ppca
    with pytest.raises(PplGenError, match=f"^{name}"):
        evaluate_ais(model, x, **kwargs)


def test_discrete_and_global_latents_are_refused():
    def discrete(x, indices=None, size=None):
        with ppl_gen.data_plate(x, indices, size):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    def global_latent(x, indices=None, size=None):
        m = pyro.sample("m", dist.Normal(0.0, 1.0))
        with ppl_gen.data_plate(x, indices, size):
            pyro.sample("x", dist.Normal(m, 1.0), obs=x)

    x = torch.zeros(3)
    with pytest.raises(PplGenError, match="^model: latent site 'c' is discrete"):
        evaluate_ais(discrete, x, steps=2, chains=2)
    with pytest.raises(PplGenError, match="^model: .*'m'.*outside"):
        evaluate_ais(global_latent, x, steps=2, chains=2)
    with pytest.raises(PplGenError, match="^generator: class-conditional"):
        from_generator(type("G", (), {"num_classes": 10})())


def test_cli_rejects_bad_ais_flags_before_any_work(capsys, tmp_path):
    from ppl_gen.cli import main

    missing = str(tmp_path / "nothing.pt")
    assert main(["evaluate", missing, "--ais-steps", "0"]) == 2
    err = capsys.readouterr().err
    assert "--ais-steps" in err and "Traceback" not in err
    assert main(["evaluate", missing, "--ais-steps", "5", "--ais-chains", "0"]) == 2
    assert "--ais-chains" in capsys.readouterr().err
