"""Tests for ppl_gen.core.device and for models building every tensor on the data's device."""

from __future__ import annotations

from collections import OrderedDict, namedtuple

import pyro
import pytest
import torch
from pyro import poutine
from torch import nn

from ppl_gen.core.device import describe, module_device, resolve_device, to_device
from ppl_gen.core.errors import PplGenError
from ppl_gen.data.datasets import DataSplits
from ppl_gen.guides import AmortisedGaussianGuide, MeanFieldGuide
from ppl_gen.infer.bounds import evaluate_bounds, log_importance_weights
from ppl_gen.infer.training import TrainConfig, train
from ppl_gen.lvm.declare import LatentVariableModel
from ppl_gen.lvm.nets import mlp
from ppl_gen.models import VAE

CUDA = torch.cuda.is_available()


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


# ----------------------------------------------------------------------------------------
# resolve_device


@pytest.mark.parametrize("spec", ["auto", None, "AUTO", " auto "])
def test_auto_is_cpu_without_cuda(no_cuda, spec):
    assert resolve_device(spec) == torch.device("cpu")


@pytest.mark.parametrize("spec", ["auto", None])
def test_auto_is_first_gpu_with_cuda(two_gpus, spec):
    assert resolve_device(spec) == torch.device("cuda", 0)


def test_default_argument_is_auto(no_cuda):
    assert resolve_device() == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cpu", "CPU", " cpu", torch.device("cpu")])
@pytest.mark.parametrize("cuda", [False, True])
def test_cpu_always_resolves(monkeypatch, spec, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert resolve_device(spec) == torch.device("cpu")


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("cuda", ("cuda", 0)),
        ("cuda:0", ("cuda", 0)),
        ("cuda:1", ("cuda", 1)),
        ("CUDA:1", ("cuda", 1)),
    ],
)
def test_cuda_specs_with_two_gpus(two_gpus, spec, expected):
    dev = resolve_device(spec)
    assert dev == torch.device(*expected)
    assert dev.index == expected[1]


@pytest.mark.parametrize("spec", ["cuda:2", "cuda:17"])
def test_cuda_index_out_of_range(two_gpus, spec):
    with pytest.raises(PplGenError, match=r"device .*only 2 CUDA device"):
        resolve_device(spec)


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_requested_without_cuda(no_cuda, spec):
    with pytest.raises(PplGenError, match=r"device .*CUDA was requested but is not available"):
        resolve_device(spec)


@pytest.mark.parametrize(
    "spec", ["gpu", "cuda:x", "tpu", "", "cuda:", "cuda:-1", "cuda0", "mps", "cpu:0", "cuda 1"]
)
def test_bad_specs_name_the_flag(spec):
    with pytest.raises(PplGenError, match="device must be auto, cpu, cuda or cuda:N") as info:
        resolve_device(spec)
    assert repr(spec) in str(info.value)
    assert "\n" not in str(info.value)


def test_describe_cpu():
    assert describe(torch.device("cpu")) == "cpu"


# ----------------------------------------------------------------------------------------
# to_device / module_device ("meta" is a second device available on every machine)

Pair = namedtuple("Pair", ["a", "b"])


def test_to_device_moves_nested_containers():
    lin = nn.Linear(2, 3)
    obj = {
        "t": torch.ones(2),
        "list": [torch.zeros(1), 3, "text"],
        "tuple": (torch.ones(3), None),
        "pair": Pair(torch.ones(1), [torch.ones(2)]),
        "ordered": OrderedDict(x=torch.ones(4)),
        "module": lin,
        "number": 1.5,
    }
    moved = to_device(obj, "meta")
    assert type(moved) is dict
    assert moved["t"].device.type == "meta"
    assert type(moved["list"]) is list and moved["list"][0].device.type == "meta"
    assert moved["list"][1:] == [3, "text"]
    assert type(moved["tuple"]) is tuple and moved["tuple"][0].device.type == "meta"
    assert moved["tuple"][1] is None
    assert type(moved["pair"]) is Pair
    assert moved["pair"].a.device.type == "meta"
    assert moved["pair"].b[0].device.type == "meta"
    assert type(moved["ordered"]) is OrderedDict and moved["ordered"]["x"].device.type == "meta"
    assert moved["module"] is lin  # moved in place
    assert lin.weight.device.type == "meta"
    assert moved["number"] == 1.5
    # The input containers are not modified.
    assert obj["t"].device.type == "cpu"
    assert obj["list"][0].device.type == "cpu"


def test_to_device_keeps_values_and_accepts_device_objects():
    t = torch.arange(5.0)
    out = to_device([t], torch.device("cpu"))
    assert torch.equal(out[0], t)


def test_module_device():
    assert module_device(nn.Linear(1, 1)) == torch.device("cpu")
    assert module_device(nn.Linear(1, 1).to("meta")).type == "meta"
    assert module_device(nn.ReLU()) == torch.device("cpu")
    assert module_device(nn.ReLU(), default=torch.device("meta")).type == "meta"
    assert module_device(lambda x: x, default=torch.device("meta")).type == "meta"


# ----------------------------------------------------------------------------------------
# Models build every tensor on the data's device and dtype


def _check_trace_tensors(model, guide, x, device, dtype):
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    checked = 0
    for trace in (guide_trace, model_trace):
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or name == "data":
                continue
            fn = site["fn"]
            value, log_prob = site["value"], fn.log_prob(site["value"])
            for t in (value, log_prob):
                assert t.device == device, name
            assert log_prob.dtype == dtype, name
            if not site["is_observed"]:
                assert value.dtype == dtype, name
            checked += 1
    assert checked == 3  # z in the guide, z and x in the model
    return model_trace


@pytest.mark.parametrize("prior", ["normal", "mog"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "student-t"])
def test_float64_model_builds_float64_tensors(prior, likelihood):
    torch.manual_seed(0)
    model = VAE(6, latent_dim=3, hidden=(8,), likelihood=likelihood, prior=prior).double()
    guide = AmortisedGaussianGuide(model, hidden=(8,)).double()
    x = torch.rand(4, 6, dtype=torch.float64).round()
    trace = _check_trace_tensors(model, guide, x, torch.device("cpu"), torch.float64)
    prior_dist = model.prior(x)
    assert prior_dist.event_shape == (3,)
    assert prior_dist.sample().dtype == torch.float64
    assert model.sample_prior(5, x).dtype == torch.float64
    if prior == "normal":
        assert prior_dist.base_dist.loc.dtype == torch.float64
        assert prior_dist.base_dist.scale.dtype == torch.float64
    assert trace.nodes["x"]["fn"].event_shape == (6,)
    est = evaluate_bounds(model, guide, x, k=4)
    assert est.iwae.dtype == torch.float64
    assert torch.isfinite(est.iwae).all()


def test_standard_normal_prior_follows_x_dtype_without_any_parameters():
    model = LatentVariableModel(2, mlp(2, [], 3), 3, "gaussian")
    assert list(model.prior.parameters()) == []
    for dtype in (torch.float32, torch.float64):
        p = model.prior(torch.zeros(1, 3, dtype=dtype))
        assert p.base_dist.loc.dtype == dtype
        assert p.base_dist.loc.device == torch.device("cpu")


def test_mean_field_guide_builds_tables_on_first_call_device():
    model = VAE(6, latent_dim=2, hidden=(4,))
    guide = MeanFieldGuide(model, num_data=4)
    assert guide.locs["z"].shape == (4, 2)
    lw = log_importance_weights(model, guide, torch.ones(4, 6), 3)
    assert lw.shape == (3, 4)


@pytest.mark.parametrize(
    "spec",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="CUDA not available"))],
)
def test_vae_trains_and_evaluates_entirely_on_the_data_device(spec):
    device = resolve_device(spec)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(96, 16, generator=g) < 0.4).float()
    data = DataSplits(
        name="toy",
        train=x[:64],
        val=x[64:80],
        test=x[80:],
        train_labels=None,
        val_labels=None,
        test_labels=None,
        image_shape=(4, 4),
        binarize="none",
    )
    for prior in ("normal", "mog"):
        pyro.clear_param_store()
        model = VAE(16, latent_dim=3, hidden=(8,), prior=prior)
        guide = AmortisedGaussianGuide(model, hidden=(8,))
        result = train(
            model,
            guide,
            data,
            TrainConfig(epochs=1, batch_size=32, device=spec, progress=False),
        )
        assert result.iterations == 2
        for module in (model, guide):
            for p in module.parameters():
                assert p.device == device
        for name, value in pyro.get_param_store().items():
            assert value.device == device, name
        xc = data.test.to(device)
        _check_trace_tensors(model, guide, xc, device, torch.float32)
        assert model.prior(xc).sample().device == device
        assert model.sample_prior(3, xc).device == device
        lw = log_importance_weights(model, guide, xc, 5)
        assert lw.device == device and lw.shape == (5, 16)
        est = evaluate_bounds(model, guide, xc, k=8)
        assert torch.isfinite(est.iwae).all() and est.iwae.shape == (16,)
        assert describe(device).startswith("cuda:0 (" if spec == "cuda" else "cpu")
