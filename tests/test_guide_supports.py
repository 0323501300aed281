"""Site discovery (:func:`ppl_gen.guides.latent_sites`), constrained latents in every guide
family, discrete sites left to enumeration, the structured guide's order, subsampling."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from ppl_gen.core.errors import PplGenError
from ppl_gen.data.datasets import DataSplits
from ppl_gen.guides import (
    AmortisedGaussianGuide,
    LocalFullRankGuide,
    MeanFieldGuide,
    StructuredAmortisedGuide,
    latent_sites,
    make_guide,
)
from ppl_gen.infer.bounds import evaluate_bounds
from ppl_gen.infer.training import TrainConfig, train
from ppl_gen.lvm.plates import data_plate

D, N = 3, 24


def _lik(x, mean):
    loc = mean.unsqueeze(-1).expand(*mean.shape, x.shape[-1])
    pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)


def lognormal_model(x, indices=None, size=None):
    with data_plate(x, indices, size):
        r = pyro.sample("r", dist.LogNormal(x.new_zeros(2), 0.5).to_event(1))
        _lik(x, r.sum(-1))


def gamma_model(x, indices=None, size=None):
    with data_plate(x, indices, size):
        r = pyro.sample("r", dist.Gamma(x.new_full((2,), 2.0), 2.0).to_event(1))
        _lik(x, r.sum(-1))


def dirichlet_model(x, indices=None, size=None):
    with data_plate(x, indices, size):
        w = pyro.sample("w", dist.Dirichlet(x.new_full((3,), 2.0)))
        _lik(x, 3 * w[..., 0] - w[..., 1])


def interval_model(x, indices=None, size=None):
    with data_plate(x, indices, size):
        u = pyro.sample("u", dist.Uniform(x.new_full((2,), -1.0), 2.0).to_event(1))
        _lik(x, u.sum(-1))


def two_layer_model(x, indices=None, size=None):
    """z2 -> z1 -> x, plus a positive scale and a discrete cluster beside them."""
    with data_plate(x, indices, size):
        z2 = pyro.sample("z2", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        z1 = pyro.sample(
            "z1", dist.Normal(torch.cat([z2, z2.sum(-1, keepdim=True)], -1), 1.0).to_event(1)
        )
        c = pyro.sample("c", dist.Categorical(logits=x.new_zeros(3)))
        s = pyro.sample("s", dist.LogNormal(x.new_zeros(()), 1.0))
        mean = z1.sum(-1) + (c == 1).to(z1.dtype)
        loc = mean.unsqueeze(-1).expand(*mean.shape, x.shape[-1])
        pyro.sample("x", dist.Normal(loc, s.unsqueeze(-1)).to_event(1), obs=x)


def three_layer_model(x, indices=None, size=None):
    with data_plate(x, indices, size):
        z3 = pyro.sample("z3", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
        z2 = pyro.sample("z2", dist.Normal(z3.expand(*z3.shape[:-1], 2), 1.0).to_event(1))
        z1 = pyro.sample("z1", dist.Normal(z2.sum(-1, keepdim=True), 1.0).to_event(1))
        _lik(x, z1.sum(-1))


def bernoulli_model(x, indices=None, size=None):
    w = pyro.param("fixed_name_weight", torch.ones(2, x.shape[-1]))
    with data_plate(x, indices, size):
        z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=z @ w).to_event(1), obs=x)


CONSTRAINED = {
    "lognormal": (lognormal_model, "r"),
    "gamma": (gamma_model, "r"),
    "dirichlet": (dirichlet_model, "w"),
    "interval": (interval_model, "u"),
}
FAMILIES = ["diag", "full", "iaf", "structured", "local-diag", "local-full"]


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(N, D, generator=torch.Generator().manual_seed(0)) + 1.0


def _splits(x) -> DataSplits:
    return DataSplits(
        name="toy", train=x, val=x[:0], test=x[:8], train_labels=None, val_labels=None,
        test_labels=None, image_shape=(D,), binarize="none",
    )  # fmt: skip


def _guide(family: str, model, num_data: int = N):
    if family == "structured":
        return StructuredAmortisedGuide(model, hidden=(16,), site_hidden=(16,))
    if family.startswith("local-"):
        return make_guide(family[6:], model, amortised=False, num_data=num_data)
    return make_guide(family, model, amortised=True, hidden=(16,))


# ----------------------------------------------------------------------------------------
# latent_sites


def test_latent_sites_describe_supports_and_parents(x):
    sites = latent_sites(two_layer_model, x[:4], torch.arange(4), N)
    assert list(sites) == ["z2", "z1", "c", "s"]  # model order
    z2, z1, c, s = sites.values()
    assert (z2.event_shape, z2.unconstrained_shape, z2.is_real, z2.parents) == (
        (2,),
        (2,),
        True,
        (),
    )
    assert z1.event_shape == (3,) and z1.parents == ("z2",)
    assert c.discrete and c.transform is None and not c.is_real
    assert s.parents == () and not s.is_real and not s.discrete
    w = latent_sites(dirichlet_model, x[:4])["w"]
    assert w.event_shape == (3,) and w.unconstrained_shape == (2,)  # stick-breaking: K - 1
    u = torch.randn(5, 2)
    assert torch.allclose(w.transform(u).sum(-1), torch.ones(5))
    assert torch.all(latent_sites(gamma_model, x[:2])["r"].transform(u) > 0)


def test_discovery_tolerates_grey_data_for_a_bernoulli_likelihood():
    grey = torch.rand(4, D)  # not in {0, 1}: Bernoulli's support check would fail
    with pyro.validation_enabled(True):
        sites = latent_sites(bernoulli_model, grey)
    assert list(sites) == ["z"]


def _outside_plate(x, indices=None, size=None):
    g = pyro.sample("g", dist.Normal(0.0, 1.0))
    with data_plate(x, indices, size):
        _lik(x, g.expand(x.shape[:1]))


def _sphere(x, indices=None, size=None):
    with data_plate(x, indices, size):
        v = pyro.sample("v", dist.ProjectedNormal(x.new_ones(3)))
        _lik(x, v.sum(-1))


def _count(x, indices=None, size=None):
    with data_plate(x, indices, size):
        k = pyro.sample("k", dist.Poisson(x.new_full((), 2.0)))
        _lik(x, k)


def _no_latent(x, indices=None, size=None):
    with data_plate(x, indices, size):
        _lik(x, x.new_zeros(x.shape[:1]))


@pytest.mark.parametrize(
    "model, match",
    [
        (_outside_plate, r"^model: latent site 'g' is outside pyro.plate\('data'\)"),
        (_sphere, r"^model: latent site 'v' has support Sphere.*biject_to cannot map"),
        (_count, r"^model: latent site 'k' is discrete \(Poisson\) without finite"),
        (_no_latent, r"^model: no latent sample sites"),
    ],
)
def test_latent_sites_errors(x, model, match):
    with pytest.raises(PplGenError, match=match):
        latent_sites(model, x[:3])


# ----------------------------------------------------------------------------------------
# constrained latents in every family


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", list(CONSTRAINED))
def test_constrained_latents_train_and_bound(x, kind, family):
    model, name = CONSTRAINED[kind]
    torch.manual_seed(0)
    guide = _guide(family, model)
    config = TrainConfig(epochs=3, batch_size=8, lr=1e-2, elbo="trace", val_every=0, progress=False)
    result = train(model, guide, _splits(x), config)
    assert all(torch.isfinite(torch.tensor(result.history["train_elbo"])))
    value = poutine.trace(guide).get_trace(x[:8], torch.arange(8), N).nodes[name]["value"]
    assert torch.all(model_support(model, name, x).check(value))
    pyro.set_rng_seed(0)
    b = evaluate_bounds(model, guide, x[:8], k=64, size=N)
    assert torch.all(torch.isfinite(b.elbo)) and torch.all(torch.isfinite(b.iwae))
    assert torch.all(b.elbo <= b.iwae + 1e-5)


def model_support(model, name, x):
    return latent_sites(model, x[:1])[name].support


def test_positive_site_log_density_has_the_log_jacobian(x):
    guide = AmortisedGaussianGuide(lognormal_model, hidden=(8,))
    trace = poutine.trace(guide).get_trace(x[:5])
    site = trace.nodes["r"]
    loc, scale = guide.encode(x[:5])["r"]
    r = site["value"]
    expected = dist.Normal(loc, scale).log_prob(r.log()).sum(-1) - r.log().sum(-1)
    assert torch.allclose(site["fn"].log_prob(r), expected, atol=1e-5)


# ----------------------------------------------------------------------------------------
# discrete sites, structured order, subsampling


@pytest.mark.parametrize("family", FAMILIES)
def test_guides_skip_discrete_sites(x, family):
    guide = _guide(family, two_layer_model)
    trace = poutine.trace(guide).get_trace(x[:4], torch.arange(4), N)
    sampled = {n for n, s in trace.nodes.items() if s["type"] == "sample" and not n.startswith("_")}
    assert sampled == {"data", "z2", "z1", "s"}


@pytest.mark.parametrize(
    "model, order, conditioned_on",
    [
        (two_layer_model, ["s", "z1", "z2"], {"s": (), "z1": (), "z2": ("z1",)}),
        (three_layer_model, ["z1", "z2", "z3"], {"z1": (), "z2": ("z1",), "z3": ("z2",)}),
    ],
)
def test_structured_guide_follows_reverse_model_order(x, model, order, conditioned_on):
    guide = StructuredAmortisedGuide(model, hidden=(8,), site_hidden=(8,))
    trace = poutine.trace(guide).get_trace(x[:4])
    sampled = [n for n, s in trace.nodes.items() if s["type"] == "sample" and n != "data"]
    assert sampled == order and guide.order == order
    assert guide.conditioned_on == conditioned_on
    # q(z2 | z1, x): changing z1 changes z2's distribution; q(z1 | x) ignores z2.
    top = order[-1]
    child = conditioned_on[top][0]
    locs = []
    for shift in (0.0, 3.0):
        value = trace.nodes[child]["value"] + shift
        cond = poutine.trace(poutine.condition(guide, data={child: value})).get_trace(x[:4])
        locs.append(cond.nodes[top]["fn"].base_dist.base_dist.loc)
    assert not torch.allclose(locs[0], locs[1])


def test_structured_guide_under_particle_plate(x):
    guide = StructuredAmortisedGuide(two_layer_model, hidden=(8,), site_hidden=(8,))
    b = evaluate_bounds(two_layer_model, guide, x[:5], k=7, keep_log_weights=True)
    assert b.log_weights.shape == (5, 7) and torch.all(torch.isfinite(b.log_weights))


@pytest.mark.parametrize("rank", [None, 2])
def test_local_full_rank_minibatch_touches_only_its_rows(x, rank):
    guide = LocalFullRankGuide(dirichlet_model, N, rank=rank)
    idx = torch.tensor([1, 5, 9])
    with pyro.validation_enabled(False):
        Trace_ELBO().differentiable_loss(dirichlet_model, guide, x[idx], idx, N).backward()
    rows = torch.zeros(N, dtype=torch.bool)
    rows[idx] = True
    for table in (guide.loc, guide.raw_diag, guide.off):
        assert torch.all(table.grad[~rows] == 0) and torch.all(table.grad[rows].abs().sum(-1) > 0)


@pytest.mark.parametrize("family", ["full", "iaf", "local-full", "local-diag", "structured"])
def test_plate_scale_is_size_over_batch(x, family):
    guide = _guide(family, two_layer_model)
    idx = torch.tensor([0, 3, 4, 10])
    trace = poutine.trace(guide).get_trace(x[idx], idx, N)
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and name != "data":
            assert site["scale"] == pytest.approx(N / 4), name


def test_mean_field_guide_constrained_rows(x):
    guide = MeanFieldGuide(dirichlet_model, N, init_scale=1e-3)
    guide.setup(x[:1], torch.zeros(1, dtype=torch.long), N)
    assert guide.locs["w"].shape == (N, 2)  # unconstrained: K - 1 values
    with torch.no_grad():
        guide.locs["w"][7] = torch.tensor([2.0, -1.0])
    w = guide(x[[7]], torch.tensor([7]), N)["w"]
    expected = latent_sites(dirichlet_model, x[:1])["w"].transform(torch.tensor([2.0, -1.0]))
    assert torch.allclose(w[0], expected, atol=1e-2)
