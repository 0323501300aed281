"""Tests for the importance-weighted training objectives (ppl_gen.infer.objectives).

The model is linear-Gaussian, ``z ~ N(0, I_2)``, ``x | z ~ N(W z + b, 0.5^2 I_3)``, with
orthogonal columns of ``W`` so that the exact posterior is a diagonal Gaussian and a
linear amortised guide ``q(z | x) = N(A x + c, diag exp(2 s))`` can equal it.
"""

from __future__ import annotations

import functools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppl_gen
from ppl_gen.cli import main
from ppl_gen.core.errors import PplGenError
from ppl_gen.guides import AmortisedGaussianGuide
from ppl_gen.infer.bounds import evaluate_bounds
from ppl_gen.infer.objectives import ImportanceWeightedObjective, make_objective
from ppl_gen.infer.training import TrainConfig
from ppl_gen.lvm.plates import data_plate

D, Q, SIGMA = 3, 2, 0.5
W0 = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
B0 = torch.tensor([0.5, -1.0, 0.2])
MODEL_PARAMS, GUIDE_PARAMS = ("W", "b"), ("A", "c", "s")
CASES = [("iwae", "reparam"), ("iwae", "stl"), ("iwae", "dreg"), ("elbo", "stl")]


def model(x, indices=None, size=None):
    w = pyro.param("W", W0.clone())
    b = pyro.param("b", B0.clone())
    with data_plate(x, indices, size):
        z = pyro.sample("z", dist.Normal(torch.zeros(Q), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ w.T + b, SIGMA).to_event(1), obs=x)


def exact_posterior() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(A, c, s)`` with ``q = p(z | x)`` (posterior precision ``I + W^T W / sigma^2``)."""
    precision = torch.eye(Q) + W0.T @ W0 / SIGMA**2
    cov = torch.linalg.inv(precision)
    a = cov @ W0.T / SIGMA**2
    return a, -a @ B0, 0.5 * torch.log(torch.diagonal(cov))


def guide(x, indices=None, size=None, noise=None):
    a = pyro.param("A", 0.1 * torch.ones(Q, D))
    c = pyro.param("c", torch.zeros(Q))
    s = pyro.param("s", torch.zeros(Q))
    with data_plate(x, indices, size):
        loc, scale = x @ a.T + c, s.exp().expand(x.shape[0], Q)
        if noise is None:
            q = dist.Normal(loc, scale)
        else:  # the same standard-normal draws for row i whatever minibatch it is in
            q = _FixedNoiseNormal(loc.expand(noise.shape[0], -1, -1), scale, noise[:, indices])
        pyro.sample("z", q.to_event(1))


class _FixedNoiseNormal(dist.Normal):
    """``N(loc, scale)`` whose ``rsample`` is ``loc + scale * eps`` for given ``eps``."""

    def __init__(self, loc, scale, eps):
        super().__init__(loc, scale)
        self.eps = eps

    def rsample(self, sample_shape=()):
        return self.loc + self.scale * self.eps

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape) + self.event_shape
        return _FixedNoiseNormal(self.loc.expand(shape), self.scale.expand(shape), self.eps)


def data(n: int = 24) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(n, Q, generator=gen)
    return z @ W0.T + B0 + SIGMA * torch.randn(n, D, generator=gen)


def grads(loss: torch.Tensor, names=MODEL_PARAMS + GUIDE_PARAMS) -> dict[str, torch.Tensor]:
    params = [pyro.param(n).unconstrained() for n in names]
    out = torch.autograd.grad(loss, params, allow_unused=True)
    return {
        n: torch.zeros_like(p) if g is None else g
        for n, p, g in zip(names, params, out, strict=True)
    }


@pytest.mark.parametrize("estimator", ["reparam", "stl", "dreg"])
def test_value_equals_the_evaluators_iwae_on_the_same_samples(estimator):
    x = data()
    n = x.shape[0]
    pyro.set_rng_seed(7)
    bounds = evaluate_bounds(model, guide, x, k=9)
    pyro.set_rng_seed(7)
    obj = ImportanceWeightedObjective("iwae", 9, estimator)
    value = obj.per_datapoint(model, guide, x, torch.arange(n), n)
    torch.testing.assert_close(value.detach(), bounds.iwae, rtol=0, atol=1e-5)
    # The training loss is minus the sum over datapoints (scale 1 on the full batch).
    pyro.set_rng_seed(7)
    obj = ImportanceWeightedObjective("iwae", 9, estimator)
    loss = obj.differentiable_loss(model, guide, x, torch.arange(n), n)
    assert float(loss.detach()) == pytest.approx(-float(bounds.iwae.sum()), abs=1e-3)


def test_value_on_a_declared_vae_equals_the_evaluators_iwae():
    splits = ppl_gen.load_dataset("digits", binarize="static", seed=0, n_train=40)
    vae = ppl_gen.LatentVariableModel(
        latent_dim=3, decoder=ppl_gen.mlp(3, [16], 64), data_dim=64, likelihood="bernoulli"
    )
    q = AmortisedGaussianGuide(vae, hidden=(16,))
    x = splits.train[:30]
    pyro.set_rng_seed(1)
    bounds = evaluate_bounds(vae, q, x, k=20)
    pyro.set_rng_seed(1)
    value = ImportanceWeightedObjective("iwae", 20).per_datapoint(vae, q, x, torch.arange(30), 30)
    torch.testing.assert_close(value.detach(), bounds.iwae, rtol=0, atol=1e-4)


@pytest.mark.parametrize(("objective", "estimator"), CASES)
def test_minibatch_gradients_average_to_the_full_batch_gradient(objective, estimator):
    """Per-datapoint log-sum-exp, then the N/B scale: over the minibatches of one epoch the
    mean gradient is the full-batch gradient (the same noise per datapoint in both)."""
    x, k, batch = data(24), 6, 8
    n = x.shape[0]
    noise = torch.randn(k, n, Q, generator=torch.Generator().manual_seed(5))
    g_model = functools.partial(model, size=n)
    g_guide = functools.partial(guide, size=n, noise=noise)
    obj = ImportanceWeightedObjective(objective, k, estimator, max_plate_nesting=1)
    full = grads(obj.differentiable_loss(g_model, g_guide, x, torch.arange(n)))
    parts = [
        grads(obj.differentiable_loss(g_model, g_guide, x[idx], idx))
        for idx in torch.randperm(n).split(batch)
    ]
    for name, g in full.items():
        mean = torch.stack([p[name] for p in parts]).mean(0)
        torch.testing.assert_close(mean, g, rtol=1e-4, atol=1e-4)
        assert g.abs().max() > 1e-2  # a real gradient, not zeros on both sides
    # Scaling inside the log-sum-exp (Pyro's RenyiELBO) would not average out: check that
    # the minibatch loss really is N/B times the per-datapoint objective of its rows.
    idx = torch.arange(batch)
    per = obj.per_datapoint(g_model, g_guide, x[idx], idx)
    loss = obj.differentiable_loss(g_model, g_guide, x[idx], idx)
    assert float(loss.detach()) == pytest.approx(-(n / batch) * float(per.sum()), rel=1e-5)


@pytest.mark.parametrize(("objective", "estimator"), CASES)
def test_decoder_gradient_is_the_reparameterised_one_on_the_same_samples(objective, estimator):
    x = data()
    n = x.shape[0]
    out = {}
    for est in ("reparam", estimator):
        pyro.set_rng_seed(11)
        obj = ImportanceWeightedObjective(objective, 5, est)
        out[est] = grads(obj.differentiable_loss(model, guide, x, torch.arange(n), n))
    for name in MODEL_PARAMS:
        torch.testing.assert_close(out[estimator][name], out["reparam"][name])
    if estimator != "reparam":  # the encoder's gradient is another estimator's
        assert not torch.allclose(out[estimator]["A"], out["reparam"]["A"])


@pytest.mark.parametrize(("objective", "estimator"), CASES)
def test_encoder_gradient_at_the_exact_posterior(objective, estimator):
    """At q = p(z | x) every log-weight is log p(x): STL and DReG give exactly zero
    encoder gradient (zero variance, Roeder et al. 2017 sec. 4); reparam does not."""
    a, c, s = exact_posterior()
    pyro.param("A", a)
    pyro.param("c", c)
    pyro.param("s", s)
    x = data()
    n = x.shape[0]
    obj = ImportanceWeightedObjective(objective, 5, estimator)
    g = grads(obj.differentiable_loss(model, guide, x, torch.arange(n), n))
    encoder = torch.cat([g[name].reshape(-1) for name in GUIDE_PARAMS])
    if estimator == "reparam":
        assert encoder.abs().max() > 1.0
    else:
        assert encoder.abs().max() < 1e-3
    assert g["W"].abs().max() > 1.0  # the decoder still learns


def _local_guide(x, indices=None, size=None):
    """Per-datapoint ``q^(i)`` (one replicate of the encoder gradient per row)."""
    loc = pyro.param("loc", torch.full((size, Q), 0.3))
    log_scale = pyro.param("log_scale", torch.full((size, Q), -0.7))
    with data_plate(x, indices, size):
        pyro.sample("z", dist.Normal(loc[indices], log_scale[indices].exp()).to_event(1))


@pytest.mark.parametrize(("objective", "estimator"), [("elbo", "stl"), ("iwae", "dreg")])
def test_encoder_gradient_is_unbiased(objective, estimator):
    """R copies of one datapoint, each with its own q^(i): R independent encoder-gradient
    draws.  Paired with reparam's on the same samples, the difference has mean zero
    (STL drops a zero-mean score term; DReG is Tucker et al. 2019, eq. 5-7)."""
    r, k = 3000, 4
    x = data(1).expand(r, D).contiguous()
    idx = torch.arange(r)
    out = {}
    for est in ("reparam", estimator):
        pyro.set_rng_seed(2)
        obj = ImportanceWeightedObjective(objective, k, est)
        out[est] = grads(obj.differentiable_loss(model, _local_guide, x, idx, r), ("loc",))
    diff = out[estimator]["loc"] - out["reparam"]["loc"]  # (R, Q)
    se = diff.std(0) / math.sqrt(r)
    assert (diff.mean(0).abs() < 4 * se).all(), (diff.mean(0), se)
    assert (diff.std(0) > 1e-3).all()  # the two estimators really differ per draw


def test_non_reparameterised_guide_is_refused_naming_estimator():
    x = torch.tensor([[0.0, 1.0, 1.0]])

    def bern_model(x, indices=None, size=None):
        with data_plate(x, indices, size):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample(
                "x", dist.Normal(c.unsqueeze(-1).expand(*c.shape, D), 1.0).to_event(1), obs=x
            )

    def bern_guide(x, indices=None, size=None):
        p = pyro.param("p", torch.tensor(0.3))
        with data_plate(x, indices, size):
            pyro.sample("c", dist.Bernoulli(p))

    with pytest.raises(PplGenError, match=r"^estimator 'stl' .* site 'c' \(Bernoulli\)"):
        ImportanceWeightedObjective("iwae", 3, "stl").differentiable_loss(bern_model, bern_guide, x)


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"objective": "renyi"}, "objective"),
        ({"estimator": "score"}, "estimator"),
        ({"objective": "iwae", "k": 0}, "k"),
        ({"objective": "iwae", "k": 2.5}, "k"),
        ({"objective": "elbo", "k": 5}, "k"),
        ({"objective": "elbo", "estimator": "dreg"}, "estimator"),
        ({"objective": "iwae", "k": 5, "num_particles": 2}, "num_particles"),
        ({"objective": "iwae", "k": 5, "elbo": "jit"}, "elbo"),
    ],
)
def test_train_config_refuses_bad_objectives_naming_the_field(fields, name):
    with pytest.raises(PplGenError, match=rf"^{name} "):
        TrainConfig(**fields).validate()


def test_make_objective_keeps_pyros_elbo_for_the_plain_elbo():
    assert type(make_objective(TrainConfig())).__name__ == "TraceMeanField_ELBO"
    obj = make_objective(TrainConfig(objective="iwae", k=7, estimator="dreg"))
    assert (obj.objective, obj.k, obj.estimator) == ("iwae", 7, "dreg")


@pytest.mark.parametrize("estimator", ["reparam", "dreg"])
def test_train_with_iwae_optimises_every_parameter(estimator):
    splits = ppl_gen.load_dataset("digits", binarize="dynamic", seed=0, n_train=64, n_test=16)
    vae = ppl_gen.LatentVariableModel(
        latent_dim=2, decoder=ppl_gen.mlp(2, [16], 64), data_dim=64, likelihood="bernoulli"
    )
    q = AmortisedGaussianGuide(vae, hidden=(16,))
    q.setup(splits.train[:2])
    before = {n: p.detach().clone() for n, p in [*vae.named_parameters(), *q.named_parameters()]}
    config = TrainConfig(
        epochs=2, batch_size=16, objective="iwae", k=5, estimator=estimator, progress=False
    )
    result = ppl_gen.train(vae, q, splits, config)
    after = dict([*vae.named_parameters(), *q.named_parameters()])
    assert all(not torch.equal(before[n], after[n]) for n in before)
    assert result.iterations == 8 and all(math.isfinite(v) for v in result.history["train_elbo"])


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--objective", "renyi"], "--objective"),
        (["--estimator", "score"], "--estimator"),
        (["--objective", "iwae", "--k", "0"], "--k"),
        (["--estimator", "dreg"], "--estimator"),
        (["--k", "5"], "--k"),
    ],
)
@pytest.mark.parametrize("command", [["train", "vae"], ["compare"]])
def test_cli_bad_objective_is_one_error_line_naming_the_flag(
    command, extra, flag, tmp_path, capsys
):
    out = tmp_path / "out"
    code = main([*command, "--out", str(out), "--device", "cpu", *extra])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0], err
    assert "Traceback" not in err
    assert not out.exists()
