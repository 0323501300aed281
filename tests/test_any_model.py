"""Any Pyro model through training, bounds and ``compare``: the models of ``model_zoo``
(written in plain Pyro style, fixed parameter names, no ppl_gen attributes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from model_zoo import ZOO, bernoulli_vae, mixture_latent
from sklearn.datasets import load_digits
from torch import nn

import ppl_gen
from ppl_gen.cli import main
from ppl_gen.core.errors import PplGenError
from ppl_gen.guides import AmortisedGaussianGuide
from ppl_gen.infer.enumeration import enum_elbo, enumerating
from ppl_gen.jobs.compare import CompareConfig, run_compare

SMALL = dict(
    epochs=2,
    n_train=96,
    n_test=16,
    iwae_k=16,
    test_refit_steps=10,
    semi_amortised_steps=10,
    nuts_subset=2,
    nuts_warmup=8,
    nuts_samples=8,
    ais_steps=10,
    ais_chains=2,
    progress=False,
)


@pytest.fixture(scope="module")
def counts_file(tmp_path_factory):
    """Digits as raw pixel counts 0..16 (for the Poisson / negative-binomial models)."""
    path = tmp_path_factory.mktemp("counts") / "counts.npy"
    np.save(path, load_digits().data.astype("float32"))
    return str(path)


def _data_options(mode: str, counts_file: str) -> dict:
    if mode == "counts":
        return {"data": counts_file, "binarize": "none"}
    return {"data": "digits", "binarize": mode}


#: Which schemes each zoo model goes through (all that apply, spread so the file stays fast).
ZOO_SCHEMES = {
    "bernoulli_vae": ("amortised", "mean-field", "semi-amortised"),
    "pyro_module_vae": ("amortised", "svi-local"),
    "two_layer_vae": ("amortised", "mean-field", "nuts"),
    "three_layer_vae": ("amortised", "semi-amortised"),
    "poisson_vae": ("amortised", "mean-field"),
    "negative_binomial_vae": ("amortised", "svi-local"),
    "positive_latent": ("amortised", "mean-field", "nuts"),
    "mixture_latent": ("amortised", "mean-field", "semi-amortised"),
    "dirichlet_latent": ("amortised", "svi-local"),
}


#: Richer guide families for some of them (rows amortised-<family>, svi-local-full).
ZOO_FAMILIES = {
    "three_layer_vae": ("diag", "structured", "iaf"),
    "dirichlet_latent": ("diag", "full"),
}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_runs_through_compare(name, counts_file, tmp_path):
    factory, mode = ZOO[name]
    families = ZOO_FAMILIES.get(name, ("diag",))
    config = CompareConfig(
        schemes=ZOO_SCHEMES[name],
        guide_families=families,
        out=str(tmp_path),
        **_data_options(mode, counts_file),
        **SMALL,
    )
    metrics = run_compare(config, factory)
    extra = {f"amortised-{f}" for f in families if f != "diag"}
    extra |= {f"svi-local-{f}" for f in families if f == "full" and "svi-local" in config.schemes}
    assert set(metrics["schemes"]) == set(ZOO_SCHEMES[name]) | extra
    for scheme, row in metrics["schemes"].items():
        assert row["failed"] is None, (scheme, row["failed"])
        assert np.isfinite(row["test_elbo"]) and np.isfinite(row["test_iwae"]), scheme
        # IWAE-K >= ELBO on the same K samples (log-mean-exp >= mean of logs), per scheme.
        assert row["test_iwae"] >= row["test_elbo"] - 1e-5, scheme
        # The reference column: AIS for every continuous model (none anneals a discrete one).
        expected = None if name == "mixture_latent" else "ais"
        assert row["test_log_likelihood_method"] == expected, scheme
        if expected:
            assert np.isfinite(row["test_log_likelihood"]), scheme
    assert (tmp_path / "report.md").is_file()


def _fixed_name_vae(data):
    """The Pyro-tutorial style: a module registered under a fixed name, a fixed pyro.param."""
    decoder = nn.Linear(2, data.data_dim)

    def model(x, indices=None, size=None):
        pyro.module("decoder", decoder)
        bias = pyro.param("bias", lambda: x.new_zeros(data.data_dim))
        with ppl_gen.data_plate(x, indices, size):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z) + bias).to_event(1), obs=x)

    return model, decoder


def test_fixed_names_do_not_leak_between_fits():
    """A second model instance with the same pyro.module / pyro.param names trains its own
    weights (Pyro's global store would hand the optimiser the first instance's tensors)."""
    data = ppl_gen.load_dataset("digits", binarize="static", seed=0, n_train=96, n_test=16)
    cfg = ppl_gen.TrainConfig(epochs=2, batch_size=32, val_every=0, progress=False)
    first, _ = _fixed_name_vae(data)
    ppl_gen.train(first, AmortisedGaussianGuide(first, hidden=(16,)), data, cfg)
    first_bias = pyro.param("bias").detach().clone()
    assert first_bias.abs().sum() > 0  # trained away from its zero start
    second, decoder = _fixed_name_vae(data)
    before = [p.detach().clone() for p in decoder.parameters()]
    ppl_gen.train(second, AmortisedGaussianGuide(second, hidden=(16,)), data, cfg)
    for b, p in zip(before, decoder.parameters(), strict=True):
        assert not torch.equal(b, p), "the second instance's decoder did not train"
    # The second fit started from its own initial value (not the first fit's), and the
    # store holds its fitted value afterwards, for evaluation.
    second_bias = pyro.param("bias").detach()
    assert not torch.equal(second_bias, first_bias)


def test_enumerated_training_objective_equals_the_reported_elbo():
    """A categorical beside a continuous code: TraceEnum_ELBO trains log sum_c p(x, z, c) -
    log q(z|x), and evaluate_bounds reports the same quantity."""
    data = ppl_gen.load_dataset("digits", binarize="static", seed=0, n_train=96, n_test=16)
    model = mixture_latent(data)
    guide = AmortisedGaussianGuide(model, hidden=(16,))
    cfg = ppl_gen.TrainConfig(epochs=2, batch_size=32, val_every=0, progress=False)
    ppl_gen.train(model, guide, data, cfg)
    x = data.train[:32]
    with torch.no_grad():
        trained = -enum_elbo(1, num_particles=400).loss(enumerating(model), guide, x) / 32
        reported = ppl_gen.evaluate_bounds(model, guide, x, k=400)
    assert abs(trained - reported.elbo_mean) < 0.1
    assert reported.iwae_mean - reported.elbo_mean < 2.0  # no spurious prior-proposal gap


def _broken_width(data):
    decoder = nn.Linear(2, 10)  # the data have 64 pixels

    def model(x, indices=None, size=None):
        pyro.module("decoder", decoder)
        with ppl_gen.data_plate(x, indices, size):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    return model


def _global_latent(data):
    def model(x, indices=None, size=None):
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with ppl_gen.data_plate(x, indices, size):
            pyro.sample("x", dist.Normal(0.0, scale).expand([x.shape[1]]).to_event(1), obs=x)

    return model


def _poisson_latent(data):
    def model(x, indices=None, size=None):
        with ppl_gen.data_plate(x, indices, size):
            rate = pyro.sample("rate", dist.Poisson(x.new_tensor(3.0)))
            loc = rate.unsqueeze(-1) * x.new_ones(x.shape[1])
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    return model


@pytest.mark.parametrize(
    "factory, schemes, match",
    [
        (_broken_width, ("amortised",), "model: .*at site 'x'"),
        (_global_latent, ("amortised",), "'scale' is outside pyro.plate"),
        (_poisson_latent, ("amortised",), "'rate'"),
        (mixture_latent, ("amortised", "nuts"), "schemes nuts: .*'c' is discrete"),
    ],
)
def test_misdeclared_models_are_refused_before_work(factory, schemes, match, tmp_path):
    out = tmp_path / "out"
    config = CompareConfig(schemes=schemes, out=str(out), binarize="static", **SMALL)
    with pytest.raises(PplGenError, match=match):
        run_compare(config, factory)
    assert not out.exists() or not any(out.iterdir())


def test_compare_runs_a_model_from_the_users_file(tmp_path, capsys):
    source = tmp_path / "my_model.py"
    source.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from model_zoo import bernoulli_vae as factory\n"
    )
    out = tmp_path / "run"
    args = ["compare", "--model", f"{source}:factory", "--schemes", "amortised", "--epochs", "1"]
    args += ["--n-train", "64", "--n-test", "8", "--iwae-k", "4", "--out", str(out), "--json"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "bernoulli_vae" and metrics["schemes"]["amortised"]["failed"] is None
    capsys.readouterr()
    assert main(["compare", "--model", f"{source}:nope", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --model") and "defines no 'nope'" in err[0]
    assert not (tmp_path / "x").exists()


def test_nuts_samples_every_site_of_a_two_layer_model(tmp_path):
    factory = ZOO["two_layer_vae"][0]
    config = CompareConfig(schemes=("nuts",), out=str(tmp_path), binarize="static", **SMALL)
    metrics = run_compare(config, factory)
    row = metrics["schemes"]["nuts"]
    assert row["failed"] is None and np.isfinite(row["test_iwae"])


def test_bernoulli_model_is_discovered_on_binarised_data():
    """Dynamic binarisation: parameter discovery sees 0/1 rows, as training does, never the
    grey levels (a Bernoulli likelihood with validation on would refuse them)."""
    data = ppl_gen.load_dataset("digits", binarize="dynamic", seed=0, n_train=64, n_test=8)
    model = bernoulli_vae(data)
    guide = AmortisedGaussianGuide(model, hidden=(16,))
    seen = []
    original = guide.setup

    def recording_setup(x, indices=None, size=None):
        seen.append(x.clone())
        return original(x, indices, size)

    guide.setup = recording_setup
    cfg = ppl_gen.TrainConfig(epochs=1, batch_size=32, val_every=0, progress=False)
    ppl_gen.train(model, guide, data, cfg)
    assert seen and all(bool(((x == 0) | (x == 1)).all()) for x in seen)
