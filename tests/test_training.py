"""Tests for ppl_gen.infer.training (SVI trainer), ppl_gen.core.checkpoint and ppl_gen.core.io.

Exact resume, seeded reproducibility, divergence handling with the last good checkpoint
kept, the loss going the right way, the ELBO flavours, bad configurations, atomic writes
and unreadable checkpoints.  Everything runs on the real digits data, kept tiny.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints

import ppl_gen.data.datasets as datasets
import ppl_gen.engine.loop as engine_loop
from ppl_gen.core.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from ppl_gen.core.errors import PplGenError
from ppl_gen.core.io import save_with, torch_save, write_json
from ppl_gen.data.datasets import DataSplits, load_dataset
from ppl_gen.infer.training import ELBOS, TrainConfig, TrainingDiverged, make_elbo, train
from ppl_gen.lvm.builders import GUIDES, ModelSpec, build_guide, build_model
from ppl_gen.lvm.plates import data_plate

N_TRAIN = 200  # 4 minibatches of 64, 64, 64, 8
SPEC = ModelSpec("vae", 64, 2, (32,), "bernoulli", (8, 8))


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_dataset("digits", binarize="dynamic", seed=0, n_train=N_TRAIN, n_test=50)


def make_pair(scheme: str, data: DataSplits, init_seed: int = 0, spec: ModelSpec = SPEC):
    """A fresh model and guide, initial weights drawn from ``init_seed``."""
    pyro.clear_param_store()
    torch.manual_seed(init_seed)
    model = build_model(spec)
    guide = build_guide(scheme, model, data.train.shape[0], spec.hidden)
    return model, guide


def config(**overrides) -> TrainConfig:
    settings = dict(
        epochs=2, batch_size=64, seed=0, val_refit_steps=5, progress=False, device="cpu"
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def parameters(model, guide) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    out.update({f"guide.{k}": v.detach().clone() for k, v in guide.state_dict().items()})
    return out


def same_parameters(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("scheme", GUIDES)
def test_resume_continues_exactly_like_an_uninterrupted_run(scheme, digits, tmp_path, monkeypatch):
    assert digits.binarize == "dynamic"
    model, guide = make_pair(scheme, digits)
    full = train(model, guide, digits, config(epochs=4, checkpoint=str(tmp_path / "full.pt")))
    expected = parameters(model, guide)

    part = tmp_path / "part.pt"
    model, guide = make_pair(scheme, digits)
    train(model, guide, digits, config(epochs=2, checkpoint=str(part)))
    assert load_checkpoint(part)["epoch"] == 2

    # A new instance with different initial weights: only the checkpoint can make it match.
    model, guide = make_pair(scheme, digits, init_seed=123)
    assert not same_parameters(parameters(model, guide), expected)
    epochs_run = []
    real_iterate = datasets.iterate_minibatches

    def counting(*args, **kwargs):
        if "generator" in kwargs:  # the training loop's shuffled epochs
            epochs_run.append(1)
        return real_iterate(*args, **kwargs)

    monkeypatch.setattr(datasets, "iterate_minibatches", counting)
    resumed = train(model, guide, digits, config(epochs=4, checkpoint=str(part)), resume=True)

    assert len(epochs_run) == 2  # epochs 3 and 4 only
    resumed_params = parameters(model, guide)
    assert resumed_params.keys() == expected.keys()
    for key in expected:  # bit for bit
        assert torch.equal(resumed_params[key], expected[key]), key
    for key in ("epoch", "train_elbo", "val_elbo"):
        assert resumed.history[key] == full.history[key], key
    assert len(resumed.history["seconds"]) == 4
    assert resumed.epochs == full.epochs == 4
    assert resumed.iterations == full.iterations == 16
    assert load_checkpoint(part)["epoch"] == 4


def test_resume_without_checkpoint_starts_from_scratch(digits, tmp_path):
    model, guide = make_pair("amortised", digits)
    result = train(
        model, guide, digits, config(epochs=1, checkpoint=str(tmp_path / "new.pt")), resume=True
    )
    assert result.history["epoch"] == [1]
    assert (tmp_path / "new.pt").is_file()


def test_resume_with_a_mismatched_model_names_checkpoint(digits, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    model, guide = make_pair("amortised", digits)
    train(model, guide, digits, config(epochs=1, val_every=0, checkpoint=str(ckpt)))
    other = ModelSpec("vae", 64, 3, (16,), "bernoulli", (8, 8))
    model, guide = make_pair("amortised", digits, spec=other)
    with pytest.raises(PplGenError, match="model does not match the checkpoint"):
        train(model, guide, digits, config(epochs=2, checkpoint=str(ckpt)), resume=True)


def test_resume_from_garbage_checkpoint_names_checkpoint(digits, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"this is not a checkpoint")
    model, guide = make_pair("amortised", digits)
    with pytest.raises(PplGenError, match="CHECKPOINT"):
        train(model, guide, digits, config(epochs=1, checkpoint=str(ckpt)), resume=True)
    assert ckpt.read_bytes() == b"this is not a checkpoint"


def plain_model(x, indices=None, size=None):
    """Hand-written Pyro model: global ``pyro.param`` sites under fixed names, no module."""
    w = pyro.param("plain_w", torch.zeros(x.shape[1]))
    b = pyro.param("plain_b", torch.zeros(x.shape[1]))
    with data_plate(x, indices, size):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(w * z.unsqueeze(-1) + b, 1.0).to_event(1), obs=x)


def plain_guide(x, indices=None, size=None):
    """Hand-written amortised guide: a linear map and a positive scale as ``pyro.param``."""
    a = pyro.param("plain_a", torch.zeros(x.shape[1]))
    s = pyro.param("plain_s", torch.tensor(1.0), constraint=constraints.positive)
    with data_plate(x, indices, size):
        pyro.sample("z", dist.Normal(x @ a, s))


PLAIN_NAMES = ("plain_w", "plain_b", "plain_a", "plain_s")


def plain_params() -> dict[str, torch.Tensor]:
    store = pyro.get_param_store()
    return {k: store[k].unconstrained().detach().clone() for k in PLAIN_NAMES}


def test_param_store_resume_of_a_plain_pyro_model_is_exact(digits, tmp_path):
    """``pyro.param`` sites outside any module survive a resume in a fresh parameter store
    (as in a new process) bit for bit, and so does the history."""
    cfg = {"elbo": "trace", "lr": 0.05}
    pyro.clear_param_store()
    full = train(plain_model, plain_guide, digits, config(epochs=3, **cfg))
    expected = plain_params()

    ckpt = tmp_path / "ckpt.pt"
    pyro.clear_param_store()
    train(plain_model, plain_guide, digits, config(epochs=1, checkpoint=str(ckpt), **cfg))
    state = load_checkpoint(ckpt)
    assert set(state["pyro_params"]) == set(PLAIN_NAMES)
    assert "model" not in state and "guide" not in state  # plain functions: no modules
    pyro.clear_param_store()  # a new process starts with an empty store
    resumed = train(
        plain_model, plain_guide, digits, config(epochs=3, checkpoint=str(ckpt), **cfg),
        resume=True,
    )  # fmt: skip
    got = plain_params()
    start = {"plain_w": torch.zeros(64), "plain_s": torch.tensor(0.0)}
    for key, value in start.items():  # training moved them: the comparison is not trivial
        assert not torch.equal(expected[key], value), key
    for key in PLAIN_NAMES:
        assert torch.equal(got[key], expected[key]), key
    for key in ("epoch", "train_elbo", "val_elbo"):
        assert resumed.history[key] == full.history[key], key


def test_resume_refuses_another_learning_rate(digits, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    model, guide = make_pair("amortised", digits)
    train(model, guide, digits, config(epochs=1, val_every=0, checkpoint=str(ckpt)))
    before = sha256(ckpt)
    for changed, name in (({"lr": 1e-2}, "lr"), ({"batch_size": 32}, "batch_size")):
        model, guide = make_pair("amortised", digits)
        cfg = config(epochs=2, val_every=0, checkpoint=str(ckpt), **changed)
        with pytest.raises(PplGenError, match=f"^{name} .*differs from the checkpoint"):
            train(model, guide, digits, cfg, resume=True)
    assert sha256(ckpt) == before


def test_resume_refuses_other_data_of_the_same_shape(digits, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    model, guide = make_pair("amortised", digits)
    train(model, guide, digits, config(epochs=1, val_every=0, checkpoint=str(ckpt)))
    other = dataclasses.replace(digits, train=digits.train.flip(0))
    assert other.train.shape == digits.train.shape
    model, guide = make_pair("amortised", other)
    with pytest.raises(PplGenError, match="^data differ.*same shapes, different content"):
        train(model, guide, other, config(epochs=2, checkpoint=str(ckpt)), resume=True)


def test_resume_refuses_another_binarisation_of_the_same_rows(digits, tmp_path):
    """Dynamic binarisation vs none: the same stored rows, another training objective."""
    ckpt = tmp_path / "ckpt.pt"
    model, guide = make_pair("amortised", digits)
    train(model, guide, digits, config(epochs=1, val_every=0, checkpoint=str(ckpt)))
    plain = dataclasses.replace(digits, binarize="none")
    model, guide = make_pair("amortised", plain)
    with pytest.raises(PplGenError, match="^binarize 'none' differs from the checkpoint's"):
        train(model, guide, plain, config(epochs=2, checkpoint=str(ckpt)), resume=True)


def test_resume_may_change_epochs_and_validation_interval(digits, tmp_path):
    """N -> 2N epochs with another ``val_every``: allowed, the new value applies."""
    ckpt = tmp_path / "ckpt.pt"
    model, guide = make_pair("amortised", digits)
    train(model, guide, digits, config(epochs=2, val_every=0, checkpoint=str(ckpt)))
    model, guide = make_pair("amortised", digits, init_seed=9)
    result = train(
        model, guide, digits, config(epochs=4, val_every=2, checkpoint=str(ckpt)), resume=True
    )
    assert result.history["epoch"] == [1, 2, 3, 4]
    assert result.history["val_elbo"][:3] == [None, None, None]
    assert math.isfinite(result.history["val_elbo"][3])
    assert load_checkpoint(ckpt)["config"]["epochs"] == 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resume_on_cuda(digits, tmp_path):
    """Checkpoints are loaded with map_location=cuda; the RNG states must still restore."""
    model, guide = make_pair("amortised", digits)
    cfg = config(epochs=3, device="cuda", checkpoint=str(tmp_path / "full.pt"))
    full = train(model, guide, digits, cfg)
    expected = parameters(model, guide)
    part = tmp_path / "part.pt"
    model, guide = make_pair("amortised", digits)
    train(model, guide, digits, config(epochs=2, device="cuda", checkpoint=str(part)))
    model, guide = make_pair("amortised", digits, init_seed=5)
    resumed = train(
        model, guide, digits, config(epochs=3, device="cuda", checkpoint=str(part)), resume=True
    )
    got = parameters(model, guide)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5)
    assert resumed.history["epoch"] == full.history["epoch"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cpu_checkpoint_resumes_on_cuda_and_back(digits, tmp_path):
    """``device`` may change on resume: the named streams live on the CPU."""
    ckpt = tmp_path / "ckpt.pt"
    model, guide = make_pair("mean-field", digits)
    train(model, guide, digits, config(epochs=1, checkpoint=str(ckpt)))
    for epochs, device in ((2, "cuda"), (3, "cpu")):
        model, guide = make_pair("mean-field", digits)
        cfg = config(epochs=epochs, device=device, checkpoint=str(ckpt))
        result = train(model, guide, digits, cfg, resume=True)
        assert result.history["epoch"] == list(range(1, epochs + 1))
        assert all(math.isfinite(v) for v in result.history["train_elbo"])


# --------------------------------------------------------------------------- seeds


def test_seeded_runs_are_reproducible(digits):
    runs = {}
    for label, seed in (("a", 1), ("b", 1), ("c", 2)):
        model, guide = make_pair("amortised", digits)
        train(model, guide, digits, config(epochs=2, seed=seed, val_every=0))
        runs[label] = parameters(model, guide)
    assert same_parameters(runs["a"], runs["b"])
    assert not same_parameters(runs["a"], runs["c"])


CLI_TRAIN = ["train", "vae", "--n-train", "64", "--batch-size", "32", "--hidden", "8",
             "--latent-dim", "2", "--epochs", "1", "--device", "cpu", "--json"]  # fmt: skip


def test_cli_train_vae_with_the_same_seed_twice_gives_identical_weights(tmp_path, capsys):
    from ppl_gen.cli import main

    weights = {}
    for label, seed in (("a", 4), ("b", 4), ("c", 5)):
        out = tmp_path / label
        assert main([*CLI_TRAIN, "--seed", str(seed), "--out", str(out)]) == 0
        state = load_checkpoint(out / "checkpoint.pt")
        weights[label] = {
            **{f"model.{k}": v for k, v in state["model"].items()},
            **{f"guide.{k}": v for k, v in state["guide"].items()},
        }
    capsys.readouterr()
    assert same_parameters(weights["a"], weights["b"])
    assert not same_parameters(weights["a"], weights["c"])


def test_the_train_vae_job_writes_metrics_and_the_figure_from_python(tmp_path):
    from ppl_gen.jobs.train_vae import TrainVAEConfig, run_train_vae

    out = tmp_path / "job"
    tiny = dict(data="digits", n_train=64, batch_size=32, hidden=(8,), latent_dim=2, epochs=1)
    cfg = TrainVAEConfig(**tiny, device="cpu", progress=False, out=str(out))
    summary = run_train_vae(cfg)
    assert {p.name for p in out.iterdir()} == {
        "checkpoint.pt",
        "metrics.json",
        "loss_curves.png",
        "history.jsonl",
    }
    assert json.loads((out / "metrics.json").read_text()) == summary
    assert summary["epochs"] == 1 and math.isfinite(summary["final_train_elbo"])
    with pytest.raises(PplGenError, match="^guide must be one of"):
        run_train_vae(dataclasses.replace(cfg, guide="flow", out=str(tmp_path / "other")))
    assert not (tmp_path / "other").exists()


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: a checkpoint that executes code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _malicious_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "kind": "latent-variable", "model": _Payload(marker)}, path)
    return path


def test_a_malicious_checkpoint_runs_no_code_in_evaluate_or_resume(tmp_path, capsys):
    from ppl_gen.cli import main

    # That the payload is live (an unrestricted load runs it) is checked once, in
    # tests/test_checkpoint_safety.py::test_the_payload_is_real.

    marker = tmp_path / "marker"
    ckpt = _malicious_checkpoint(tmp_path / "run" / "checkpoint.pt", marker)
    assert main(["evaluate", str(ckpt), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: CHECKPOINT") and "refused" in err
    assert main([*CLI_TRAIN, "--out", str(tmp_path / "run"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: CHECKPOINT") and len(err.strip().splitlines()) == 1
    assert not marker.exists()


# --------------------------------------------------------------------------- divergence


def _poison_decoder(model, value: float, from_call: int) -> None:
    """Make the decoder output ``value`` from its ``from_call``-th training call on."""
    calls = 0

    def hook(module, inputs, output):
        nonlocal calls
        if not torch.is_grad_enabled():  # parameter discovery and validation
            return None
        calls += 1
        return torch.full_like(output, value) if calls >= from_call else None

    model.decoder.register_forward_hook(hook)


@pytest.mark.filterwarnings("ignore:Encountered NaN")
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(bad, digits, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    model, guide = make_pair("amortised", digits)
    train(model, guide, digits, config(epochs=2, checkpoint=str(ckpt)))
    before = sha256(ckpt)

    model, guide = make_pair("amortised", digits)
    _poison_decoder(model, bad, from_call=2)  # epoch 3, batch 2 of the resumed run
    with pytest.raises(TrainingDiverged, match=r"epoch 3, batch 2\b") as info:
        train(model, guide, digits, config(epochs=4, checkpoint=str(ckpt)), resume=True)
    assert "non-finite" in str(info.value)
    assert str(ckpt) in str(info.value)
    assert "\n" not in str(info.value)

    assert sha256(ckpt) == before
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 2 and len(state["history"]["train_elbo"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "history.jsonl"]


@pytest.mark.filterwarnings("ignore:Encountered NaN")
@pytest.mark.parametrize("scheme", GUIDES)
def test_divergence_in_one_run_keeps_the_checkpoint_of_the_last_good_epoch(
    scheme, digits, tmp_path, monkeypatch
):
    ckpt = tmp_path / "ckpt.pt"
    saved = []
    real_save = engine_loop.save_checkpoint

    def recording(path, state):
        out = real_save(path, state)
        saved.append(sha256(Path(path)))
        return out

    monkeypatch.setattr(engine_loop, "save_checkpoint", recording)
    model, guide = make_pair(scheme, digits)
    _poison_decoder(model, math.nan, from_call=4 * 2 + 3)  # epoch 3, batch 3
    with pytest.raises(TrainingDiverged, match=r"epoch 3, batch 3\b"):
        train(model, guide, digits, config(epochs=4, val_every=0, checkpoint=str(ckpt)))
    assert len(saved) == 2
    assert sha256(ckpt) == saved[-1]
    assert load_checkpoint(ckpt)["epoch"] == 2


def test_a_huge_learning_rate_stops_with_an_explosion_and_claims_no_checkpoint(digits, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    model, guide = make_pair("amortised", digits)
    with pytest.raises(TrainingDiverged, match=r"exploded .* at epoch 1, batch \d") as info:
        train(model, guide, digits, config(epochs=2, lr=1e6, batch_size=16, checkpoint=str(ckpt)))
    text = str(info.value)
    assert "no checkpoint was written" in text and "kept at" not in text and "\n" not in text
    assert not ckpt.exists()


def test_a_dataclass_config_is_stored_and_the_spec_and_kind_kept(digits, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    model, guide = make_pair("mean-field", digits)
    spec = {"kind": "custom-kind", "model": {"x": 1}}
    train(model, guide, digits, config(epochs=1, checkpoint=str(ckpt)), spec=spec)
    state = load_checkpoint(ckpt)
    assert state["kind"] == "custom-kind" and state["spec"] == spec
    assert state["config"]["lr"] == 1e-3 and state["config"]["batch_size"] == 64
    assert {"model", "guide", "optimizer"} <= set(state) and "pyro_params" not in state
    train(*make_pair("mean-field", digits), digits, config(epochs=1, checkpoint=str(ckpt)))
    assert load_checkpoint(ckpt)["kind"] == "latent-variable"


# --------------------------------------------------------------------------- learning


def test_elbo_improves_over_20_epochs():
    data = load_dataset("digits", binarize="dynamic", seed=0, n_train=400)
    model, guide = make_pair("amortised", data)
    result = train(model, guide, data, config(epochs=20, batch_size=100, lr=3e-3, val_every=5))
    elbo = result.history["train_elbo"]
    assert len(elbo) == 20 and all(math.isfinite(v) for v in elbo)
    assert elbo[-1] > elbo[0] + 5.0  # nats per datapoint
    assert sum(elbo[-3:]) / 3 > sum(elbo[:3]) / 3
    vals = [v for v in result.history["val_elbo"] if v is not None]
    assert len(vals) == 4 and vals[-1] > vals[0]
    assert result.iterations == 20 * 4
    assert result.history["seconds"] == sorted(result.history["seconds"])


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("elbo", list(ELBOS))
def test_every_elbo_option_trains(elbo, digits):
    model, guide = make_pair("amortised", digits)
    result = train(model, guide, digits, config(epochs=1, elbo=elbo))
    assert result.epochs == 1
    assert math.isfinite(result.history["train_elbo"][0])
    assert math.isfinite(result.history["val_elbo"][0])
    assert result.history["train_elbo"][0] < 0  # Bernoulli: log-likelihood <= 0


# --------------------------------------------------------------------------- bad config


@pytest.mark.parametrize(
    "overrides, flag",
    [
        ({"elbo": "foo"}, "elbo"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -3}, "batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"local_lr": -1.0}, "local_lr"),
        ({"num_particles": 0}, "num_particles"),
        ({"val_every": -1}, "val_every"),
        ({"seed": -1}, "seed"),
        ({"precision": "fp8"}, "precision"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_config_raises_ppl_gen_error_naming_the_parameter(overrides, flag, digits, tmp_path):
    model, guide = make_pair("amortised", digits)
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(PplGenError, match=f"^{flag} "):
        train(model, guide, digits, config(checkpoint=str(ckpt), **overrides))
    assert not ckpt.exists()


def test_make_elbo_rejects_unknown_names():
    with pytest.raises(PplGenError, match="^elbo "):
        make_elbo("trace_elbo")
    assert isinstance(make_elbo("trace"), pyro.infer.Trace_ELBO)


def test_jit_batch_larger_than_training_set_is_rejected(digits):
    model, guide = make_pair("amortised", digits)
    with pytest.raises(PplGenError, match="^batch_size "):
        train(model, guide, digits, config(elbo="jit", batch_size=N_TRAIN + 1))


# --------------------------------------------------------------------------- atomic writes


def _partial_then_fail(path_arg_index: int = 1):
    def fail(*args, **kwargs):
        Path(args[path_arg_index]).write_bytes(b"\x80partial")
        raise OSError("disk full")

    return fail


def test_torch_save_failure_leaves_previous_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    torch_save(path, {"version": 1})
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", _partial_then_fail())
    with pytest.raises(OSError, match="disk full"):
        torch_save(path, {"version": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert torch.load(path, weights_only=True) == {"version": 1}
    assert sorted(os.listdir(tmp_path)) == ["state.pt"]


def test_save_checkpoint_failure_keeps_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"epoch": 1})
    before = sha256(path)
    monkeypatch.setattr(torch, "save", _partial_then_fail())
    with pytest.raises(OSError):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert sha256(path) == before
    assert load_checkpoint(path) == {"format": FORMAT, "epoch": 1}
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]


def test_write_json_failure_leaves_previous_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_json(path, {"a": 1})
    before = path.read_bytes()

    def fail(self, *args, **kwargs):
        with open(self, "w") as fh:
            fh.write('{"a": ')
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", fail)
    with pytest.raises(OSError, match="disk full"):
        write_json(path, {"a": 2})
    monkeypatch.undo()
    with pytest.raises(TypeError):  # not JSON-serialisable
        write_json(path, {"a": object()})
    assert path.read_bytes() == before
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["metrics.json"]


def test_save_with_failure_leaves_previous_file_and_no_temp(tmp_path):
    path = tmp_path / "figure.png"
    save_with(path, lambda p: p.write_bytes(b"old"))

    def writer(p: Path) -> None:
        assert p.suffix == ".png" and p.parent == tmp_path
        p.write_bytes(b"half")
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError):
        save_with(path, writer)
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["figure.png"]


def test_writes_replace_existing_files_and_create_folders(tmp_path):
    path = tmp_path / "a" / "b" / "m.json"
    write_json(path, {"v": 1})
    write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 2}
    assert os.listdir(path.parent) == ["m.json"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(umask, mode, tmp_path):
    old = os.umask(umask)
    try:
        paths = [
            write_json(tmp_path / "m.json", {"v": 1}),
            torch_save(tmp_path / "s.pt", {"v": 1}),
            save_with(tmp_path / "f.png", lambda p: p.write_bytes(b"png")),
        ]
    finally:
        os.umask(old)
    for path in paths:
        assert path.stat().st_mode & 0o777 == mode, path.name


# --------------------------------------------------------------------------- load_checkpoint


def _truncated(path: Path) -> None:
    save_checkpoint(path, {"epoch": 1, "weights": torch.randn(1000)})
    path.write_bytes(path.read_bytes()[:2000])


BAD_FILES = {
    "missing": lambda p: None,
    "garbage": lambda p: p.write_bytes(b"\x00\x01 definitely not a torch file"),
    "empty": lambda p: p.write_bytes(b""),
    "wrong-format": lambda p: torch.save({"model": {}, "epoch": 3}, p),
    "not-a-dict": lambda p: torch.save([1, 2, 3], p),
    "truncated": _truncated,
    "folder": lambda p: p.mkdir(),
}


@pytest.mark.parametrize("bad", sorted(BAD_FILES))
def test_load_checkpoint_rejects_bad_files_naming_checkpoint(bad, tmp_path):
    path = tmp_path / "ckpt.pt"
    BAD_FILES[bad](path)
    with pytest.raises(PplGenError, match="^CHECKPOINT") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)
