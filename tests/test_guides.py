"""Tests for the guides: AmortisedGaussianGuide (declared and hand-written models) and the
subsampling-correct MeanFieldGuide, plus test-time fitting of local guides."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch import nn

from ppl_gen.core.errors import PplGenError
from ppl_gen.data.datasets import DataSplits
from ppl_gen.guides import GUIDES, AmortisedGaussianGuide, MeanFieldGuide
from ppl_gen.guides.sites import local_latent_shapes
from ppl_gen.infer.bounds import evaluate_bounds, log_importance_weights
from ppl_gen.infer.training import TrainConfig, fit_local_guide, train
from ppl_gen.lvm.nets import mlp
from ppl_gen.lvm.plates import data_plate
from ppl_gen.models import VAE

D, Z, N = 12, 2, 40


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    """Binary data with structure (two prototypes plus noise), so training has signal."""
    g = torch.Generator().manual_seed(0)
    protos = (torch.rand(2, D, generator=g) < 0.5).float()
    which = torch.randint(0, 2, (2 * N,), generator=g)
    flip = (torch.rand(2 * N, D, generator=g) < 0.1).float()
    return (protos[which] - flip).abs()


@pytest.fixture
def splits(data) -> DataSplits:
    return DataSplits(
        name="toy",
        train=data[:N],
        val=data[N : N + N // 2],
        test=data[N + N // 2 :],
        train_labels=None,
        val_labels=None,
        test_labels=None,
        image_shape=(D,),
        binarize="none",
    )


@pytest.fixture
def vae() -> VAE:
    torch.manual_seed(0)
    return VAE(D, latent_dim=Z, hidden=(16,))


class HandWritten(nn.Module):
    """A hand-written Pyro model (no ``latent_shapes``): two local latent sites, one of them
    with a matrix event shape and a dotted name."""

    def __init__(self) -> None:
        super().__init__()
        self.decoder = mlp(Z + 4, [16], D)

    def forward(self, x, indices=None, size=None):
        pyro.module("hand_written", self)
        with data_plate(x, indices, size):
            z = pyro.sample("z", dist.Normal(x.new_zeros(Z), 1.0).to_event(1))
            w = pyro.sample("w.grid", dist.Normal(x.new_zeros(2, 2), 1.0).to_event(2))
            h = torch.cat([z, w.flatten(-2)], -1)
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(h)).to_event(1), obs=x)


@pytest.fixture
def hand() -> HandWritten:
    torch.manual_seed(0)
    return HandWritten()


def _global_latent_model(x, indices=None, size=None):
    shift = pyro.sample("shift", dist.Normal(x.new_zeros(()), 1.0))
    with data_plate(x, indices, size):
        z = pyro.sample("z", dist.Normal(x.new_zeros(Z), 1.0).to_event(1))
        pyro.sample("x", dist.Normal((z.sum(-1) + shift).unsqueeze(-1), 1.0).to_event(1), obs=x)


def _count_latent_model(x, indices=None, size=None):
    # Poisson has no finite enumerable support (positive latents are supported: see
    # tests/test_guide_supports.py).
    with data_plate(x, indices, size):
        rate = pyro.sample("rate", dist.Poisson(x.new_ones(Z)).to_event(1))
        pyro.sample("x", dist.Normal(rate.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)


def _no_latent_model(x, indices=None, size=None):
    with data_plate(x, indices, size):
        pyro.sample("x", dist.Normal(x.new_zeros(1), 1.0).to_event(1), obs=x)


def _elbo(model, guide, x, seed: int = 123, **kwargs) -> float:
    pyro.set_rng_seed(seed)
    return evaluate_bounds(model, guide, x, k=20, **kwargs).elbo_mean


# ----------------------------------------------------------------------------------------
# AmortisedGaussianGuide


def test_guide_names():
    assert GUIDES == ("amortised", "mean-field")


def test_amortised_guide_built_at_construction_for_declared_model(vae):
    guide = AmortisedGaussianGuide(vae, hidden=(16, 8))
    assert guide.body is not None
    assert guide.shapes == {"z": (Z,)}
    assert guide.heads["z"].in_features == 8 and guide.heads["z"].out_features == 2 * Z
    linears = [m for m in guide.body.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(D, 16), (16, 8)]
    # The model's parameters are not registered as the guide's.
    assert {id(p) for p in guide.parameters()}.isdisjoint({id(p) for p in vae.parameters()})


def test_amortised_guide_encode_and_sample_shapes(vae, data):
    guide = AmortisedGaussianGuide(vae, hidden=(16,), min_scale=0.01)
    loc, scale = guide.encode(data[:5])["z"]
    assert loc.shape == scale.shape == (5, Z)
    assert torch.all(scale >= 0.01)
    trace = poutine.trace(guide).get_trace(data[:5])
    site = trace.nodes["z"]
    assert site["value"].shape == (5, Z) and site["fn"].event_shape == (Z,)
    assert [f.name for f in site["cond_indep_stack"]] == ["data"]
    # Amortised: the code of a datapoint does not depend on the rest of the batch.
    loc_alone, _ = guide.encode(data[2:3])["z"]
    assert torch.allclose(loc_alone, loc[2:3], atol=1e-6)


def test_custom_encoder_body(vae, data):
    body = nn.Sequential(nn.Linear(D, 5), nn.Tanh())
    body.out_dim = 5
    guide = AmortisedGaussianGuide(vae, encoder_body=body)
    assert guide.body is body and guide.heads["z"].in_features == 5
    assert guide(data[:3])["z"].shape == (3, Z)


def test_amortised_guide_built_lazily_for_hand_written_model(hand, data):
    guide = AmortisedGaussianGuide(hand, hidden=(16,))
    assert guide.body is None and len(list(guide.parameters())) == 0
    values = guide(data[:4])
    assert guide.shapes == {"z": (Z,), "w.grid": (2, 2)}
    assert set(guide.heads.keys()) == {"z", "w_grid"}
    assert guide.heads["w_grid"].out_features == 2 * 4
    assert values["z"].shape == (4, Z) and values["w.grid"].shape == (4, 2, 2)
    # setup() is a no-op once built.
    body = guide.body
    guide.setup(data[:2])
    assert guide.body is body
    # The model's sample sites are matched one to one by the guide's.
    tr = poutine.trace(guide).get_trace(data[:4])
    assert tr.nodes["w.grid"]["fn"].event_shape == (2, 2)


def test_local_latent_shapes_of_hand_written_model(hand, data):
    shapes = local_latent_shapes(hand, data[:3], torch.tensor([5, 6, 7]), 100)
    assert shapes == {"z": (Z,), "w.grid": (2, 2)}
    assert list(shapes) == ["z", "w.grid"]  # sampling order


@pytest.mark.parametrize("evaluate_first", [False, True])
def test_hand_written_model_trains_and_evaluates_like_a_declared_one(hand, splits, evaluate_first):
    guide = AmortisedGaussianGuide(hand, hidden=(16,))
    if evaluate_first:  # building through evaluate_bounds, then training, works too
        evaluate_bounds(hand, guide, splits.test, k=2)
    else:
        guide.setup(splits.test)
    before = _elbo(hand, guide, splits.test)
    config = TrainConfig(epochs=15, batch_size=10, lr=1e-2, val_every=5, progress=False)
    result = train(hand, guide, splits, config)
    assert result.iterations == 15 * 4
    hist = result.history["train_elbo"]
    assert hist[-1] > hist[0]
    after = _elbo(hand, guide, splits.test)
    assert after > before + 1.0
    est = evaluate_bounds(hand, guide, splits.test, k=50)
    assert est.iwae.shape == (N // 2,)
    assert torch.all(est.iwae >= est.elbo - 1e-4)


def test_declared_model_trains_with_amortised_guide(vae, splits):
    guide = AmortisedGaussianGuide(vae, hidden=(16,))
    before = _elbo(vae, guide, splits.test)
    config = TrainConfig(epochs=15, batch_size=10, lr=1e-2, val_every=0, progress=False)
    train(vae, guide, splits, config)
    assert _elbo(vae, guide, splits.test) > before + 1.0


@pytest.mark.parametrize(
    "model, match",
    [
        (_global_latent_model, r"latent site 'shift' is outside pyro.plate\('data'\)"),
        (_count_latent_model, r"latent site 'rate' is discrete \(Poisson"),
        (_no_latent_model, "no latent sample sites"),
    ],
)
@pytest.mark.parametrize("kind", ["amortised", "mean-field"])
def test_guides_reject_unsupported_models(model, match, kind):
    x = torch.randn(4, 1)
    guide = AmortisedGaussianGuide(model) if kind == "amortised" else MeanFieldGuide(model, 4)
    with pytest.raises(PplGenError, match=match):
        guide(x)


def test_hand_written_model_params_not_in_guide(hand, data):
    guide = AmortisedGaussianGuide(hand)
    guide(data[:2])
    assert {id(p) for p in guide.parameters()}.isdisjoint({id(p) for p in hand.parameters()})


# ----------------------------------------------------------------------------------------
# MeanFieldGuide


def test_mean_field_tables_and_initialisation(vae):
    guide = MeanFieldGuide(vae, num_data=N, init_scale=0.2)
    assert guide.locs["z"].shape == guide.raw_scales["z"].shape == (N, Z)
    loc, scale = guide.posterior(torch.tensor([0, 5]))["z"]
    assert torch.equal(loc, torch.zeros(2, Z))
    assert torch.allclose(scale, torch.full((2, Z), 0.2))


def test_mean_field_minibatch_only_touches_its_rows(vae, data):
    guide = MeanFieldGuide(vae, num_data=N)
    idx = torch.tensor([3, 17, 29, 30])
    xb = data[idx]
    loss = Trace_ELBO().differentiable_loss(vae, guide, xb, idx, N)
    loss.backward()
    rows = torch.zeros(N, dtype=torch.bool)
    rows[idx] = True
    for table in (guide.locs["z"], guide.raw_scales["z"]):
        grad = table.grad
        assert grad is not None
        assert torch.all(grad[~rows] == 0)
        assert torch.all(grad[rows].abs().sum(-1) > 0)


def test_mean_field_samples_use_rows_of_indices(vae, data):
    guide = MeanFieldGuide(vae, num_data=N, init_scale=1e-3)
    with torch.no_grad():
        guide.locs["z"].copy_(torch.arange(N * Z, dtype=torch.float32).reshape(N, Z))
    idx = torch.tensor([7, 2])
    z = guide(data[idx], idx, N)["z"]
    assert torch.allclose(z, guide.locs["z"][idx], atol=0.01)


def test_plate_scale_is_size_over_batch(vae, data):
    guide = MeanFieldGuide(vae, num_data=N)
    idx = torch.tensor([0, 4, 9, 11, 12])
    xb = data[idx]
    guide_trace = poutine.trace(guide).get_trace(xb, idx, N)
    model_trace = poutine.trace(poutine.replay(vae, trace=guide_trace)).get_trace(xb, idx, N)
    for trace in (guide_trace, model_trace):
        for name in ("z",) + (("x",) if trace is model_trace else ()):
            assert trace.nodes[name]["scale"] == pytest.approx(N / 5), name
    # The minibatch loss is (N / batch) times the sum of the unscaled per-datapoint terms.
    pyro.set_rng_seed(7)
    loss = Trace_ELBO().differentiable_loss(vae, guide, xb, idx, N)
    pyro.set_rng_seed(7)
    lw = log_importance_weights(vae, guide, xb, 1, idx, N, max_plate_nesting=1)
    assert loss.item() == pytest.approx(-lw.sum().item() * N / 5, rel=1e-5)


def test_amortised_loss_scales_with_size(vae, data):
    guide = AmortisedGaussianGuide(vae, hidden=(16,))
    xb = data[:8]
    pyro.set_rng_seed(3)
    small = Trace_ELBO().differentiable_loss(vae, guide, xb, None, None)
    pyro.set_rng_seed(3)
    big = Trace_ELBO().differentiable_loss(vae, guide, xb, None, 80)
    assert big.item() == pytest.approx(10 * small.item(), rel=1e-5)


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.arange(4), N + 1), r"size: this mean-field guide holds 40 datapoints, got size=41"),
        ((torch.arange(4), 4), "got size=4"),
        ((None, None), "indices: required when the batch"),
    ],
)
def test_mean_field_call_errors(vae, data, args, match):
    guide = MeanFieldGuide(vae, num_data=N)
    with pytest.raises(PplGenError, match=match):
        guide(data[:4], *args)


@pytest.mark.parametrize("num_data", [0, -3, 2.0])
def test_mean_field_bad_num_data(vae, num_data):
    with pytest.raises(PplGenError, match="num_data must be a positive integer"):
        MeanFieldGuide(vae, num_data=num_data)


def test_mean_field_whole_dataset_without_indices(vae, data):
    guide = MeanFieldGuide(vae, num_data=6)
    assert guide(data[:6])["z"].shape == (6, Z)


def test_mean_field_lazy_for_hand_written_model(hand, data):
    guide = MeanFieldGuide(hand, num_data=N)
    assert not guide.shapes
    guide(data[:4], torch.arange(4), N)
    assert guide.shapes == {"z": (Z,), "w.grid": (2, 2)}
    assert guide.locs["w_grid"].shape == (N, 2, 2)


def test_mean_field_trains_with_subsampling(vae, splits):
    guide = MeanFieldGuide(vae, num_data=N)
    before = _elbo(vae, guide, splits.train)
    config = TrainConfig(
        epochs=20, batch_size=8, lr=1e-2, local_lr=5e-2, val_every=0, progress=False
    )
    train(vae, guide, splits, config)
    # Every row of the tables was visited (5 batches of 8 rows per epoch).
    assert torch.all(guide.locs["z"].abs().sum(-1) > 0)
    assert _elbo(vae, guide, splits.train) > before + 1.0


# ----------------------------------------------------------------------------------------
# fit_local_guide: test-time inference with the model frozen


@pytest.mark.parametrize("batch_size", [None, 7])
def test_fit_local_guide_keeps_model_and_improves_elbo(vae, splits, batch_size):
    train(
        vae,
        AmortisedGaussianGuide(vae, hidden=(16,)),
        splits,
        TrainConfig(epochs=5, batch_size=10, lr=1e-2, val_every=0, progress=False),
    )
    vae.train()
    vae.zero_grad(set_to_none=True)
    x = splits.test
    params = {k: v.detach().clone() for k, v in vae.state_dict().items()}
    flags = [p.requires_grad for p in vae.parameters()]
    initial = _elbo(vae, MeanFieldGuide(vae, num_data=x.shape[0]), x)
    guide = fit_local_guide(vae, x, steps=60, lr=5e-2, batch_size=batch_size)
    assert isinstance(guide, MeanFieldGuide) and guide.num_data == x.shape[0]
    fitted = _elbo(vae, guide, x)
    assert fitted > initial + 1.0
    for name, value in vae.state_dict().items():
        assert torch.equal(value, params[name]), name
    assert [p.requires_grad for p in vae.parameters()] == flags
    assert vae.training
    assert all(p.grad is None for p in vae.parameters())  # no gradient reached the model
