"""Tests for declared models: LatentVariableModel, likelihood families, priors, VAE, ConvVAE."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch import nn

from ppl_gen.core.errors import PplGenError
from ppl_gen.data.datasets import DataSplits
from ppl_gen.guides import AmortisedGaussianGuide
from ppl_gen.infer.bounds import evaluate_bounds
from ppl_gen.infer.training import TrainConfig, train
from ppl_gen.lvm.declare import LatentVariableModel
from ppl_gen.lvm.likelihoods import (
    LIKELIHOODS,
    Bernoulli,
    BernoulliImage,
    Categorical,
    Gaussian,
    make_likelihood,
)
from ppl_gen.lvm.nets import mlp
from ppl_gen.lvm.plates import data_plate
from ppl_gen.lvm.priors import MixtureOfGaussiansPrior, StandardNormalPrior, make_prior
from ppl_gen.models import VAE, ConvVAE

D, Z, B = 6, 3, 5
NUM_CLASSES = 4

# (family name, constructor kwargs)
FAMILIES = [
    ("bernoulli", {}),
    ("gaussian", {}),
    ("gaussian", {"scale": 0.5}),
    ("laplace", {}),
    ("student-t", {"df": 4.0}),
    ("categorical", {"num_classes": NUM_CLASSES}),
]
FAMILY_IDS = ["bernoulli", "gaussian-learned", "gaussian-fixed", "laplace", "student-t", "cat"]


def make_data(family: str, n: int, d: int = D, seed: int = 0) -> torch.Tensor:
    """Data suited to ``family``: binary, integer levels stored as floats, or continuous."""
    g = torch.Generator().manual_seed(seed)
    if family == "bernoulli":
        return (torch.rand(n, d, generator=g) < 0.3).float()
    if family == "categorical":
        return torch.randint(0, NUM_CLASSES, (n, d), generator=g).float()
    return 0.5 + 0.3 * torch.randn(n, d, generator=g)


def declared(family: str, kwargs: dict, prior: str = "normal") -> LatentVariableModel:
    torch.manual_seed(0)
    lik = make_likelihood(family, D, **kwargs)
    return LatentVariableModel(Z, mlp(Z, [8], D * lik.params_per_dim), D, lik, prior)


def tiny_splits(x: torch.Tensor) -> DataSplits:
    n = x.shape[0]
    return DataSplits(
        name="toy",
        train=x[: n // 2],
        val=x[n // 2 : 3 * n // 4],
        test=x[3 * n // 4 :],
        train_labels=None,
        val_labels=None,
        test_labels=None,
        image_shape=(x.shape[1],),
        binarize="none",
    )


# ----------------------------------------------------------------------------------------
# Declared models with every family and prior


@pytest.mark.parametrize("prior", ["normal", "mog"])
@pytest.mark.parametrize(("family", "kwargs"), FAMILIES, ids=FAMILY_IDS)
def test_declared_model_trace_shapes(family, kwargs, prior):
    model = declared(family, kwargs, prior)
    x = make_data(family, B)
    trace = poutine.trace(model).get_trace(x)
    trace.compute_log_prob()
    z, obs = trace.nodes["z"], trace.nodes["x"]
    assert z["value"].shape == (B, Z)
    assert z["fn"].event_shape == (Z,)
    assert z["fn"].batch_shape == (B,)
    assert not z["is_observed"]
    assert obs["is_observed"] and torch.equal(obs["value"], x)
    assert obs["fn"].event_shape == (D,)
    assert obs["fn"].batch_shape == (B,)
    for site in (z, obs):
        assert site["log_prob"].shape == (B,)
        assert torch.isfinite(site["log_prob"]).all()
        assert [f.name for f in site["cond_indep_stack"]] == ["data"]
    assert model.latent_shapes == {"z": (Z,)}
    assert model.image_shape == (D,)
    # forward returns the latent code.
    assert model(x).shape == (B, Z)


@pytest.mark.parametrize(("family", "kwargs"), FAMILIES, ids=FAMILY_IDS)
def test_declared_model_vectorises_over_particles(family, kwargs):
    """The decoder and likelihood accept leading sample dims (as in IWAE)."""
    model = declared(family, kwargs)
    x = make_data(family, B)
    with pyro.plate("particles", 7, dim=-2):
        trace = poutine.trace(model).get_trace(x)
    assert trace.nodes["z"]["value"].shape == (7, B, Z)
    lp = trace.nodes["x"]["fn"].log_prob(x)
    assert lp.shape == (7, B)
    assert torch.isfinite(lp).all()


@pytest.mark.parametrize(("family", "kwargs"), FAMILIES, ids=FAMILY_IDS)
def test_declared_model_trains_with_svi(family, kwargs):
    model = declared(family, kwargs)
    guide = AmortisedGaussianGuide(model, hidden=(8,))
    data = tiny_splits(make_data(family, 128, seed=1))
    before = evaluate_bounds(model, guide, data.train, k=1).elbo_mean
    config = TrainConfig(epochs=6, batch_size=16, lr=2e-2, val_every=3, progress=False)
    result = train(model, guide, data, config)
    assert result.epochs == 6 and result.iterations == 6 * 4
    assert all(math.isfinite(v) for v in result.history["train_elbo"])
    assert result.history["val_elbo"][0] is None and math.isfinite(result.history["val_elbo"][2])
    pyro.set_rng_seed(1)
    after = evaluate_bounds(model, guide, data.train, k=1).elbo_mean
    assert after > before


def test_learned_and_fixed_scales():
    learned = make_likelihood("gaussian", D)
    assert isinstance(learned, Gaussian)
    assert [n for n, _ in learned.named_parameters()] == ["raw_scale"]
    out = torch.zeros(2, D)
    assert torch.allclose(learned.scale(out), torch.full((D,), 0.1), atol=1e-6)
    fixed = make_likelihood("laplace", D, scale=0.3)
    assert list(fixed.parameters()) == []
    assert torch.equal(fixed.scale(out.double()), torch.full((D,), 0.3, dtype=torch.float64))
    x = torch.randn(2, D)
    expected = torch.distributions.Laplace(out, 0.3).log_prob(x).sum(-1)
    assert torch.allclose(fixed(out).log_prob(x), expected)
    with torch.no_grad():
        learned.raw_scale.fill_(-50.0)
    assert torch.all(learned.scale(out) >= learned.min_scale)


def test_student_t_log_prob_matches_torch():
    lik = make_likelihood("student-t", D, df=5.0, scale=0.7)
    out, x = torch.randn(3, D), torch.randn(3, D)
    expected = torch.distributions.StudentT(5.0, out, 0.7).log_prob(x).sum(-1)
    assert torch.allclose(lik(out).log_prob(x), expected)


def test_categorical_log_prob_and_mean():
    lik = make_likelihood("categorical", D, num_classes=NUM_CLASSES)
    assert isinstance(lik, Categorical) and lik.params_per_dim == NUM_CLASSES
    out = torch.randn(3, D * NUM_CLASSES)
    x = make_data("categorical", 3)
    logp = torch.log_softmax(out.reshape(3, D, NUM_CLASSES), -1)
    expected = logp.gather(-1, x.long().unsqueeze(-1)).squeeze(-1).sum(-1)
    assert torch.allclose(lik(out).log_prob(x), expected, atol=1e-5)
    mean = lik.mean(out)
    assert mean.shape == (3, D)
    assert torch.all((mean >= 0) & (mean <= NUM_CLASSES - 1))
    # All mass on the top level gives mean = top level.
    peaked = torch.full((1, D, NUM_CLASSES), -1e4)
    peaked[..., -1] = 0
    assert torch.allclose(lik.mean(peaked.reshape(1, -1)), torch.full((1, D), NUM_CLASSES - 1.0))


# ----------------------------------------------------------------------------------------
# BernoulliImage


@pytest.mark.parametrize("target", ["binary", "soft"])
@pytest.mark.parametrize("lead", [(), (4,), (3, 4)])
def test_bernoulli_image_log_prob_matches_torch(target, lead):
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(*lead, 10, generator=g)
    x = torch.rand(*lead, 10, generator=g)
    if target == "binary":
        x = (x < 0.5).float()
    d = BernoulliImage(logits)
    expected = torch.distributions.Bernoulli(logits=logits, validate_args=False).log_prob(x)
    assert d.batch_shape == lead and d.event_shape == (10,)
    assert torch.allclose(d.log_prob(x), expected.sum(-1), atol=1e-5)


def test_bernoulli_image_broadcasts_data_against_samples():
    logits = torch.randn(7, 4, 10)  # (K, batch, D)
    x = (torch.rand(4, 10) < 0.5).float()
    expected = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)
    assert torch.allclose(BernoulliImage(logits).log_prob(x), expected, atol=1e-5)


def test_bernoulli_image_expand_sample_and_mean():
    d = BernoulliImage(torch.zeros(10))
    e = d.expand((3, 2))
    assert e.batch_shape == (3, 2) and e.event_shape == (10,)
    s = e.sample((5,))
    assert s.shape == (5, 3, 2, 10)
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(d.mean, torch.full((10,), 0.5))
    # Under a plate the distribution is expanded to the plate's size.
    x = torch.ones(6, 10)
    with pyro.plate("p", 6):
        trace = poutine.trace(lambda: pyro.sample("x", BernoulliImage(torch.zeros(10)), obs=x))
        tr = trace.get_trace()
    assert tr.nodes["x"]["fn"].batch_shape == (6,)
    assert torch.allclose(tr.log_prob_sum(), torch.tensor(-60 * math.log(2.0)))


def test_bernoulli_likelihood_mean_is_sigmoid():
    lik = Bernoulli(3)
    out = torch.tensor([[-100.0, 0.0, 100.0]])
    assert torch.allclose(lik.mean(out), torch.tensor([[0.0, 0.5, 1.0]]))


# ----------------------------------------------------------------------------------------
# VAE and ConvVAE


def test_vae_architecture_and_shapes():
    model = VAE(64, latent_dim=5, hidden=(32, 16))
    linears = [m for m in model.decoder if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(5, 32), (32, 16), (16, 64)]
    assert model.hidden == (32, 16) and model.data_dim == 64 and model.latent_dim == 5
    x = (torch.rand(3, 64) < 0.5).float()
    trace = poutine.trace(model).get_trace(x)
    assert trace.nodes["z"]["value"].shape == (3, 5)
    assert trace.nodes["x"]["fn"].event_shape == (64,)
    assert model.decode_mean(torch.zeros(4, 5)).shape == (4, 64)
    assert model.sample_prior(7, x).shape == (7, 5)


def test_vae_gaussian_has_one_output_per_dim_and_learned_scale():
    model = VAE(10, latent_dim=2, hidden=(4,), likelihood="gaussian")
    assert model.decoder[-1].out_features == 10
    assert model.likelihood.raw_scale.shape == (10,)


@pytest.mark.parametrize(("likelihood", "per_dim"), [("bernoulli", 1), ("gaussian", 1)])
def test_conv_vae_shapes(likelihood, per_dim):
    torch.manual_seed(0)
    model = ConvVAE(latent_dim=4, likelihood=likelihood)
    assert model.data_dim == 784 and model.image_shape == (28, 28)
    for lead in [(2,), (3, 2)]:
        out = model.decoder(torch.randn(*lead, 4))
        assert out.shape == (*lead, 784 * per_dim)
    # Leading dims are independent: decoding a stack equals decoding each slice.
    z = torch.randn(3, 2, 4)
    assert torch.allclose(model.decoder(z)[1], model.decoder(z[1]), atol=1e-6)
    x = (torch.rand(2, 784) < 0.5).float()
    with pyro.plate("particles", 3, dim=-2):
        trace = poutine.trace(model).get_trace(x)
    assert trace.nodes["z"]["value"].shape == (3, 2, 4)
    assert trace.nodes["x"]["fn"].log_prob(x).shape == (3, 2)
    # Image-shaped input is flattened.
    assert poutine.trace(model).get_trace(x.reshape(2, 28, 28)).nodes["x"]["value"].shape == (
        2,
        784,
    )


def test_conv_vae_categorical_levels_last():
    torch.manual_seed(0)
    model = ConvVAE(latent_dim=2, likelihood="categorical")
    k = model.likelihood.num_classes
    z = torch.randn(3, 2)
    out = model.decoder(z)
    assert out.shape == (3, 784 * k)
    chans = model.decoder.deconv(model.decoder.fc(z).reshape(3, 64, 7, 7))  # (3, k, 28, 28)
    # Pixel (0, 1) is the second group of k logits: its k channels at row 0, column 1.
    assert torch.allclose(out[:, k : 2 * k], chans[:, :, 0, 1])
    assert torch.allclose(out[:, -k:], chans[:, :, 27, 27])
    assert model.decode_mean(z).shape == (3, 784)


def test_conv_vae_guide_uses_conv_encoder():
    model = ConvVAE(latent_dim=3)
    guide = AmortisedGaussianGuide(model)
    assert any(isinstance(m, nn.Conv2d) for m in guide.body.modules())
    x = (torch.rand(4, 784) < 0.5).float()
    est = evaluate_bounds(model, guide, x, k=3)
    assert est.iwae.shape == (4,) and torch.isfinite(est.iwae).all()


@pytest.mark.parametrize("shape", [(3, 65), (3, 63), (3, 8, 7), (3,)])
def test_flatten_rejects_wrong_width(shape):
    model = VAE(64, latent_dim=2, hidden=(4,), image_shape=(8, 8))
    with pytest.raises(PplGenError, match=r"^x: .*\b64\b"):
        model(torch.zeros(shape))


def test_flatten_accepts_images():
    model = VAE(64, latent_dim=2, hidden=(4,), image_shape=(8, 8))
    assert model.flatten(torch.zeros(3, 8, 8)).shape == (3, 64)


# ----------------------------------------------------------------------------------------
# Priors and errors


def test_priors():
    x = torch.zeros(2, D)
    normal = make_prior("normal", 4)
    assert isinstance(normal, StandardNormalPrior)
    p = normal(x)
    assert p.event_shape == (4,) and p.batch_shape == ()
    assert torch.allclose(p.log_prob(torch.zeros(4)), torch.tensor(-2 * math.log(2 * math.pi)))
    mog = make_prior("mog", 4, n_components=3)
    assert isinstance(mog, MixtureOfGaussiansPrior)
    q = mog(x)
    assert q.event_shape == (4,) and q.batch_shape == ()
    assert {n for n, _ in mog.named_parameters()} == {"locs", "log_scales", "logits"}
    # Deterministic initialisation (seeded generator), independent of the global seed.
    torch.manual_seed(123)
    assert torch.equal(make_prior("mog", 4, n_components=3).locs, mog.locs)
    # Mixture density = log-mean-exp of the component densities (equal weights at init).
    z = torch.randn(5, 4)
    comp = dist.Normal(mog.locs, 1.0).to_event(1).log_prob(z[:, None, :])
    assert torch.allclose(q.log_prob(z), torch.logsumexp(comp, -1) - math.log(3), atol=1e-5)
    custom = StandardNormalPrior(4)
    assert make_prior(custom, 4) is custom


def test_mog_prior_parameters_are_learned_by_svi():
    torch.manual_seed(0)
    model = VAE(D, latent_dim=2, hidden=(8,), prior="mog")
    guide = AmortisedGaussianGuide(model, hidden=(8,))
    locs = model.prior.locs.detach().clone()
    train(
        model,
        guide,
        tiny_splits(make_data("bernoulli", 64)),
        TrainConfig(epochs=1, batch_size=16, val_every=0, progress=False),
    )
    assert not torch.equal(model.prior.locs, locs)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: make_likelihood("poisson", 3), "likelihood must be one of bernoulli"),
        (lambda: make_likelihood("Gaussian", 3), "likelihood must be one of"),
        (lambda: make_prior("vamp", 3), "prior must be one of normal, mog"),
        (lambda: make_likelihood("categorical", 3, num_classes=1), "num_classes must be >= 2"),
        (lambda: make_likelihood("gaussian", 3, scale=0.0), "scale must be positive"),
        (lambda: make_prior("mog", 3, n_components=0), "n_components must be >= 1"),
        (lambda: VAE(64, latent_dim=0), "latent_dim must be a positive integer"),
        (lambda: LatentVariableModel(2, nn.Identity(), 0), "data_dim must be a positive integer"),
        (lambda: LatentVariableModel(2.0, nn.Identity(), 2), "latent_dim"),
        (lambda: VAE(8, likelihood="beta"), "likelihood"),
    ],
)
@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_bad_arguments_raise(call, match):
    with pytest.raises(PplGenError, match=match):
        call()


def test_likelihood_names_are_all_buildable():
    for name in LIKELIHOODS:
        lik = make_likelihood(name, 3)
        assert lik.data_dim == 3
        assert make_likelihood(lik, 3) is lik


def test_model_instances_do_not_share_parameters():
    a = VAE(D, latent_dim=2, hidden=(4,))
    b = VAE(D, latent_dim=2, hidden=(4,))
    assert a.scope != b.scope
    x = make_data("bernoulli", 2)
    a(x)
    b(x)
    names = set(pyro.get_param_store().keys())
    assert any(n.startswith(a.scope) for n in names) and any(n.startswith(b.scope) for n in names)


def test_hand_written_model_with_data_plate_and_declared_model_agree():
    """A declared model defines the same density as the equivalent hand-written one."""
    model = declared("bernoulli", {})
    x = make_data("bernoulli", B)

    def hand(x, indices=None, size=None):
        with data_plate(x, indices, size):
            z = pyro.sample("z", dist.Normal(x.new_zeros(Z), 1.0).to_event(1))
            logits = model.decoder(z)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    tr = poutine.trace(model).get_trace(x)
    tr2 = poutine.trace(poutine.replay(hand, trace=tr)).get_trace(x)
    assert torch.allclose(tr.log_prob_sum(), tr2.log_prob_sum(), atol=1e-4)
