"""Tests for the MNIST judge classifier (ppl_gen.metrics.classifier) and its CLI command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ppl_gen.cli import main
from ppl_gen.core.checkpoint import load_checkpoint, save_checkpoint
from ppl_gen.core.errors import PplGenError
from ppl_gen.core.portable import (
    enter_portable_numerics,
    portable_numerics_active,
    run_portable_module,
)
from ppl_gen.jobs.train_classifier import _child_main, classifier_destination
from ppl_gen.metrics.classifier import (
    ClassifierConfig,
    LeNet,
    accuracy,
    default_classifier_path,
    load_classifier,
    save_classifier,
    to_classifier_input,
    train_classifier,
)

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def synthetic_digits(n_per_class: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Ten classes, each a bright 6x6 block at its own position plus noise: (N, 784)."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c in range(10):
        img = 0.1 * torch.rand(n_per_class, 28, 28, generator=g)
        r, col = divmod(c, 5)
        img[:, 4 + 12 * r : 10 + 12 * r, 1 + 5 * col : 7 + 5 * col] += 0.8
        xs.append(img.clamp(0, 1).reshape(n_per_class, 784))
        ys.append(torch.full((n_per_class,), c, dtype=torch.int64))
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize("shape", [(4, 784), (4, 1, 28, 28), (4, 3, 28, 28)])
def test_input_layouts_give_logits_and_features(shape):
    net = LeNet()
    x = torch.rand(shape)
    assert to_classifier_input(x).shape == (4, 1, 28, 28)
    assert net(x).shape == (4, 10)
    assert net.features(x).shape == (4, LeNet.feature_dim)


def test_colour_input_is_scored_as_its_grey_mean():
    net = LeNet()
    x = torch.rand(3, 3, 28, 28)
    torch.testing.assert_close(net(x), net(x.mean(1, keepdim=True)))


@pytest.mark.parametrize("shape", [(4, 64), (4, 2, 28, 28), (4, 1, 32, 32), (784,)])
def test_bad_input_shape_names_x(shape):
    with pytest.raises(PplGenError, match="^x: "):
        to_classifier_input(torch.rand(shape))


def test_training_learns_a_separable_problem_and_round_trips(tmp_path):
    x, y = synthetic_digits()
    untrained = accuracy(LeNet(), x, y)
    config = ClassifierConfig(epochs=3, batch_size=32, device="cpu", progress=False)
    net, metrics = train_classifier(x, y, config, test_x=x, test_y=y)
    assert metrics["train_accuracy"] > 0.95 > untrained
    assert metrics["test_accuracy"] == metrics["train_accuracy"]
    path = save_classifier(tmp_path / "c.pt", net, metrics, config)
    loaded = load_classifier(path)
    assert not loaded.training
    torch.testing.assert_close(loaded(x[:8]), net(x[:8]))


def test_load_classifier_errors(tmp_path):
    with pytest.raises(PplGenError, match="^classifier: no MNIST judge.*ppl-gen train classifier"):
        load_classifier(tmp_path / "missing.pt")
    save_checkpoint(tmp_path / "other.pt", {"kind": "dcgan"})
    with pytest.raises(PplGenError, match="not an MNIST classifier"):
        load_classifier(tmp_path / "other.pt")


def _tiny_config(**kw) -> ClassifierConfig:
    return ClassifierConfig(
        **{"epochs": 2, "batch_size": 50, "device": "cpu", "progress": False, **kw}
    )


def _tiny_data() -> tuple[torch.Tensor, torch.Tensor]:
    return synthetic_digits(n_per_class=8)


def test_same_seed_gives_identical_weights_and_another_seed_differs():
    x, y = _tiny_data()
    a, _ = train_classifier(x, y, _tiny_config(seed=3))
    b, _ = train_classifier(x, y, _tiny_config(seed=3))
    c, _ = train_classifier(x, y, _tiny_config(seed=4))
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_resume_continues_exactly_and_refuses_changed_settings(tmp_path):
    x, y = _tiny_data()
    straight, metrics = train_classifier(x, y, _tiny_config())
    ckpt = str(tmp_path / "clf.pt")
    _, first = train_classifier(x, y, _tiny_config(checkpoint=ckpt, stop_after=1))
    assert first["epochs"] == 1
    resumed, again = train_classifier(x, y, _tiny_config(checkpoint=ckpt), resume=True)
    assert again["epochs"] == 2 and again["history"]["loss"] == metrics["history"]["loss"]
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    state = load_checkpoint(ckpt)
    assert state["kind"] == "classifier" and state["epoch"] == 2
    # the training checkpoint is itself a judge
    torch.testing.assert_close(load_classifier(ckpt)(x[:4]), straight(x[:4]), rtol=0, atol=0)
    with pytest.raises(PplGenError, match="^lr 0.01 differs"):
        train_classifier(x, y, _tiny_config(checkpoint=ckpt, lr=0.01, epochs=3), resume=True)
    with pytest.raises(PplGenError, match="^data differ"):
        train_classifier(x.flip(0), y.flip(0), _tiny_config(checkpoint=ckpt, epochs=3), resume=True)


def test_default_path_is_the_cache_never_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("PPL_GEN_CACHE", str(tmp_path / "cache"))
    assert default_classifier_path() == tmp_path / "cache" / "lenet_mnist.pt"
    monkeypatch.delenv("PPL_GEN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_classifier_path() == tmp_path / "xdg" / "ppl_gen" / "lenet_mnist.pt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_classifier_path() == tmp_path / "home" / ".cache" / "ppl_gen" / "lenet_mnist.pt"
    # a judge planted at the old cwd-relative default is not picked up
    monkeypatch.chdir(tmp_path)
    config = _tiny_config(epochs=1)
    save_classifier(tmp_path / "runs" / "classifier" / "lenet_mnist.pt", LeNet(), {}, config)
    with pytest.raises(PplGenError) as info:
        load_classifier()
    message = str(info.value)
    assert "\n" not in message and "ppl-gen train classifier" in message
    assert "--classifier" in message and str(default_classifier_path()) in message


def test_a_judge_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PPL_GEN_CACHE", str(tmp_path))
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save(
        {"format": "ppl_gen-checkpoint-v2", "kind": "classifier", "x": Payload()},
        default_classifier_path(),
    )
    with pytest.raises(PplGenError, match="^classifier: cannot read.*refused"):
        load_classifier()
    assert not marker.exists()


@pytest.mark.parametrize(
    "labels, message", [(torch.full((200,), 10), "0..9"), (torch.zeros(199), "equal rows")]
)
def test_train_classifier_rejects_bad_labels(labels, message):
    x, _ = synthetic_digits()
    with pytest.raises(PplGenError, match=message):
        train_classifier(x, labels.long(), ClassifierConfig(epochs=1, progress=False))


@pytest.mark.parametrize(
    "argv, flag",
    [(["--epochs", "0"], "--epochs"), (["--lr", "-1"], "--lr"), (["--device", "tpu"], "device")],
)
def test_cli_bad_input_is_one_line(capsys, tmp_path, argv, flag):
    code = main(["train", "classifier", "--out", str(tmp_path / "c"), *argv])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0], err


@pytest.mark.skipif(
    not (SHARED_MNIST / "MNIST" / "raw").is_dir(),
    reason="MNIST not found at ../shared/data/mnist (needed to train the real classifier)",
)
def test_cli_trains_on_mnist_into_the_cache_and_evaluates(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PPL_GEN_CACHE", str(tmp_path / "cache"))
    code = main(
        [
            "train",
            "classifier",
            "--data-root",
            str(SHARED_MNIST),
            "--epochs",
            "3",
            "--n-train",
            "3000",
            "--json",
        ]
    )
    assert code == 0, capsys.readouterr().err
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["test_accuracy"] > 0.9
    assert metrics["numerics"] == "portable"  # trained in a fresh portable interpreter
    judge = tmp_path / "cache" / "lenet_mnist.pt"
    assert metrics["checkpoint"] == str(judge) and judge.is_file()
    assert (tmp_path / "cache" / "metrics.json").is_file()
    assert not load_classifier().training  # found without a path
    code = main(
        [
            "evaluate",
            str(judge),
            "--data-root",
            str(SHARED_MNIST),
            "--n-test",
            "500",
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_test"] == 500 and result["test_accuracy"] > 0.9


def test_destination_is_out_when_given_else_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PPL_GEN_CACHE", str(tmp_path / "cache"))
    assert classifier_destination(tmp_path / "o") == tmp_path / "o" / "lenet_mnist.pt"
    assert classifier_destination(None) == tmp_path / "cache" / "lenet_mnist.pt"


def test_portable_numerics_need_a_fresh_process():
    assert not portable_numerics_active()  # the test process uses the fastest kernels
    with pytest.raises(PplGenError, match="fresh process started with ATEN_CPU_CAPABILITY"):
        enter_portable_numerics()


def test_portable_child_reports_a_failure_as_one_line(tmp_path):
    error_file = tmp_path / "error.txt"
    payload = {"data_root": None, "n_train": None, "out": str(tmp_path), "tensorboard": False}
    payload["train"] = {"epochs": 0}
    assert _child_main([json.dumps(payload), str(error_file)]) == 2
    assert error_file.read_text() == "epochs must be a positive integer, got 0"
    with pytest.raises(PplGenError, match="^the portable run of ppl_gen.no_such_module exited"):
        run_portable_module("ppl_gen.no_such_module", [], error_file=tmp_path / "e.txt")
