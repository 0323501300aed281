"""``ppl-gen train gan|dcgan|cgan|cyclegan`` and ``ppl-gen evaluate`` on their checkpoints:
small runs, and bad input → one line ``error: ...``, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ppl_gen.cli import main
from ppl_gen.core.checkpoint import load_checkpoint

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

MNIST = Path("..") / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(
    not (MNIST / "MNIST" / "raw").is_dir(), reason="needs MNIST in ../shared/data/mnist"
)
TINY = [
    "--epochs",
    "1",
    "--latent-dim",
    "4",
    "--ngf",
    "4",
    "--ndf",
    "4",
    "--hidden",
    "16",
    "--batch-size",
    "32",
    "--device",
    "cpu",
]


def run(capsys, argv: list) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for f in fragments:
        assert f in lines[0], lines[0]


def test_train_gan_on_digits_and_resume(capsys, tmp_path):
    out = tmp_path / "gan"
    code, stdout, err = run(capsys, ["train", "gan", *TINY, "--out", out, "--json"])
    assert code == 0, err
    metrics = json.loads(stdout)
    assert metrics["epochs"] == 1 and metrics["image_shape"] == [1, 8, 8]
    assert (out / "samples_epoch_001.png").is_file() and (out / "loss_curves.png").is_file()
    argv = ["train", "gan", *TINY, "--out", out, "--resume"]
    argv[argv.index("--epochs") + 1] = "2"
    code, stdout, err = run(capsys, argv)
    assert code == 0, err
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2


def test_unknown_loss(capsys, tmp_path):
    code, _, err = run(capsys, ["train", "dcgan", "--loss", "softplus", "--out", tmp_path])
    one_line_error(code, err, "--loss", "'vanilla', 'lsgan', 'wgan-gp', 'hinge'")
    assert not any(tmp_path.iterdir())


def test_empty_data_folder(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, ["train", "gan", "--data", empty, "--out", tmp_path / "o"])
    one_line_error(code, err, "--data", "no image files")


def test_unknown_dataset(capsys, tmp_path):
    code, _, err = run(capsys, ["train", "gan", "--data", "cifar", "--out", tmp_path / "o"])
    one_line_error(code, err, "--data", "mnist, digits, mnistm")


def test_mismatched_channels_on_resume(capsys, tmp_path):
    out = tmp_path / "gan"
    assert run(capsys, ["train", "gan", *TINY, "--out", out])[0] == 0
    code, _, err = run(capsys, ["train", "gan", *TINY, "--out", out, "--resume", "--channels", "3"])
    one_line_error(code, err, "training data", "[1797, 1, 8, 8]", "[1797, 3, 8, 8]", "resume")


def test_resume_may_raise_epochs_and_decay_but_not_the_lr(capsys, tmp_path):
    out = tmp_path / "gan"
    argv = ["train", "gan", *TINY, "--decay-epochs", "1", "--out", out]
    assert run(capsys, argv)[0] == 0
    longer = [*argv, "--resume"]
    longer[longer.index("--epochs") + 1] = "3"
    longer[longer.index("--decay-epochs") + 1] = "2"
    code, _, err = run(capsys, [*longer, "--lr", "1e-3"])
    one_line_error(code, err, "--lr 0.001 differs from the checkpoint's 0.0002")
    code, stdout, err = run(capsys, [*longer, "--json"])
    assert code == 0, err
    metrics = json.loads(stdout)
    assert metrics["epochs"] == 3 and metrics["history"]["epoch"] == [1, 2, 3]
    assert all(lr > 0 for lr in metrics["history"]["lr"])
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 3


def test_evaluate_does_not_look_for_data_in_the_working_directory(capsys, tmp_path, monkeypatch):
    from PIL import Image

    from ppl_gen.metrics.classifier import ClassifierConfig, LeNet, save_classifier

    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(8):
        Image.new("L", (28, 28), color=30 * i).save(folder / f"{i}.png")
    clf = tmp_path / "lenet.pt"
    save_classifier(clf, LeNet(), {}, ClassifierConfig())
    out = tmp_path / "dcgan"
    argv = ["train", "dcgan", "--data", folder, *TINY, "--batch-size", "8", "--out", out]
    assert run(capsys, argv)[0] == 0
    # a cwd-relative MNIST folder (the old fallback ../shared/data/mnist) must not be used
    (tmp_path / "shared" / "data" / "mnist").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    code, _, err = run(capsys, ["evaluate", out / "checkpoint.pt", "--classifier", clf])
    one_line_error(code, err, "--data-root is required")


def test_mismatched_channels_for_identity_loss(capsys, tmp_path):
    from PIL import Image

    grey, colour = tmp_path / "grey", tmp_path / "colour"
    grey.mkdir()
    colour.mkdir()
    for i in range(4):
        Image.new("L", (8, 8), color=40 * i).save(grey / f"{i}.png")
        Image.new("RGB", (8, 8), color=(40 * i, 0, 0)).save(colour / f"{i}.png")
    argv = [
        "train",
        "cyclegan",
        "--data-a",
        grey,
        "--data-b",
        colour,
        "--no-match-channels",
        "--batch-size",
        "2",
        "--out",
        tmp_path / "o",
        "--device",
        "cpu",
    ]
    code, _, err = run(capsys, argv)
    one_line_error(code, err, "--lambda-identity", "channels")
    # with matched channels (grey repeated to RGB) the same data trains
    argv = [
        "train",
        "cyclegan",
        "--data-a",
        grey,
        "--data-b",
        colour,
        "--epochs",
        "1",
        "--decay-epochs",
        "0",
        "--batch-size",
        "2",
        "--ngf",
        "2",
        "--ndf",
        "2",
        "--n-blocks",
        "1",
        "--n-layers",
        "1",
        "--out",
        tmp_path / "o",
        "--device",
        "cpu",
    ]
    code, _, err = run(capsys, argv)
    assert code == 0, err
    assert load_checkpoint(tmp_path / "o" / "checkpoint.pt")["image_shapes"] == [[3, 8, 8]] * 2


def test_dcgan_on_8x8_images(capsys, tmp_path):
    code, _, err = run(capsys, ["train", "dcgan", "--data", "digits", *TINY, "--out", tmp_path])
    one_line_error(code, err, "28x28 or 32x32")


def test_bad_numbers(capsys, tmp_path):
    code, _, err = run(
        capsys, ["train", "cgan", "--data", "digits", "--latent-dim", "0", "--out", tmp_path]
    )
    one_line_error(code, err, "--latent-dim")
    code, _, err = run(capsys, ["train", "cyclegan", "--pool-size", "-1", "--out", tmp_path])
    one_line_error(code, err, "--pool-size")


def test_evaluate_refuses_generators_of_other_sizes(capsys, tmp_path):
    out = tmp_path / "cgan"
    assert run(capsys, ["train", "cgan", "--data", "digits", *TINY, "--out", out])[0] == 0
    code, _, err = run(
        capsys, ["evaluate", out / "checkpoint.pt", "--classifier", tmp_path / "none.pt"]
    )
    one_line_error(code, err, "28x28")  # digits generators cannot be scored by the MNIST judge


@needs_mnist
def test_train_and_evaluate_cgan_on_mnist(capsys, tmp_path):
    from ppl_gen.metrics.classifier import ClassifierConfig, LeNet, save_classifier

    clf = tmp_path / "lenet.pt"
    save_classifier(clf, LeNet(), {}, ClassifierConfig())  # untrained judge: smoke test only
    out = tmp_path / "cgan"
    argv = ["train", "cgan", "--data-root", MNIST, "--n-train", "128", *TINY, "--out", out]
    assert run(capsys, argv)[0] == 0
    code, _, err = run(
        capsys, ["evaluate", out / "checkpoint.pt", "--classifier", tmp_path / "no.pt"]
    )
    one_line_error(code, err, "--classifier", "ppl-gen train classifier")
    argv = [
        "evaluate",
        out / "checkpoint.pt",
        "--classifier",
        clf,
        "--n-samples",
        "200",
        "--n-test",
        "200",
        "--device",
        "cpu",
        "--out",
        tmp_path / "ev",
        "--json",
    ]
    code, stdout, err = run(capsys, argv)
    assert code == 0, err
    result = json.loads(stdout)
    for key in (
        "fd_lenet",
        "fd_lenet_real_halves",
        "inception_score",
        "label_agreement",
        "mode_coverage",
    ):
        assert key in result
    assert 1.0 - 1e-6 <= result["inception_score"] <= 10.0 + 1e-6  # float32 rounding
    assert (tmp_path / "ev" / "samples.png").is_file()


@needs_mnist
def test_gan_checkpoint_as_latent_pair(tmp_path, capsys):
    pairs = pytest.importorskip("ppl_gen.latent.pairs")
    out = tmp_path / "dcgan"
    argv = ["train", "dcgan", "--data-root", MNIST, "--n-train", "64", *TINY, "--out", out]
    assert run(capsys, argv)[0] == 0
    pair = pairs.load_pair(out / "checkpoint.pt", "cpu")
    assert pair.encode is None and pair.latent_dim == 4
    assert pair.decode_rows(torch.randn(3, 4)).shape == (3, 784)
