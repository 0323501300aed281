"""The ``ppl-gen`` commands of the autoencoder family: training, evaluation, latent tools,
novelty, and their one-line errors (exit 2) on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ppl_gen.cli import main
from ppl_gen.core.checkpoint import load_checkpoint

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

TINY = ["--epochs", "2", "--hidden", "16", "--device", "cpu", "--json"]


def run(capsys, argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str, *names: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), lines[0]
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny checkpoints: a 2-D denoising AE, a 3-D contractive conv AE, a 2-D CVAE."""
    root = tmp_path_factory.mktemp("cli")
    out = {}
    for name, argv in {
        "dae": ["train", "dae", "--latent-dim", "2", "--noise", "masking"],
        "cae": ["train", "cae", "--arch", "conv", "--latent-dim", "3"],
        "cvae": ["train", "cvae", "--latent-dim", "2"],
    }.items():
        assert main([*argv, *TINY, "--out", str(root / name)]) == 0, name
        out[name] = root / name
    return out


def test_train_outputs_and_evaluate(checkpoints, capsys):
    for name in ("dae", "cae"):
        folder = checkpoints[name]
        for f in (
            "checkpoint.pt",
            "metrics.json",
            "loss_curves.png",
            "samples.png",
            "reconstructions.png",
        ):
            assert (folder / f).is_file(), (name, f)
        assert load_checkpoint(folder / "checkpoint.pt")["kind"] == "autoencoder"
        code, out, _ = run(
            capsys, ["evaluate", folder / "checkpoint.pt", "--device", "cpu", "--json"]
        )
        assert code == 0
        result = json.loads(out)
        assert result["variant"] == name and result["test_reconstruction"] > 0
    assert load_checkpoint(checkpoints["cvae"] / "checkpoint.pt")["kind"] == "cvae"
    code, out, _ = run(
        capsys, ["evaluate", checkpoints["cvae"] / "checkpoint.pt", "--iwae-k", "5", "--json"]
    )
    assert code == 0
    result = json.loads(out)
    assert result["test_elbo"] <= result["test_iwae"] + 0.5 and result["iwae_k"] == 5


def test_resume_extends_training(checkpoints, capsys, tmp_path):
    argv = ["train", "ae", "--epochs", "1", "--hidden", "8", "--device", "cpu", "--json"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    argv[3] = "2"
    code, out, _ = run(capsys, [*argv, "--out", tmp_path, "--resume"])
    assert code == 0 and json.loads(out)["epochs"] == 2
    # any other changed setting is refused, naming its flag
    code, _, err = run(capsys, [*argv, "--out", tmp_path, "--resume", "--lr", "0.01"])
    assert code == 2
    one_line_error(err, "--lr 0.01 differs from the checkpoint's 0.001")


@pytest.mark.parametrize(
    "tool", ["interpolate", "grid", "manifold", "attribute", "tsne", "reconstruct"]
)
def test_latent_tools_write_figure_and_arrays(checkpoints, capsys, tmp_path, tool):
    for name in ("dae", "cvae"):
        extra = (
            ["--label", "4"]
            if name == "cvae" and tool in ("interpolate", "grid", "manifold")
            else []
        )
        if tool == "tsne":
            extra = ["--n-points", "60", "--perplexity", "10"]
        code, out, err = run(
            capsys,
            [
                "latent",
                tool,
                checkpoints[name] / "checkpoint.pt",
                "--out",
                tmp_path / name,
                "--json",
                *extra,
            ],
        )
        assert code == 0, err
        summary = json.loads(out)
        assert Path(summary["figure"]).is_file() and Path(summary["arrays"]).is_file()


def test_latent_bad_input(checkpoints, capsys, tmp_path):
    ckpt = checkpoints["dae"] / "checkpoint.pt"
    np.save(tmp_path / "z2.npy", np.zeros(2, dtype=np.float32))
    np.save(tmp_path / "z3.npy", np.ones(3, dtype=np.float32))
    np.save(tmp_path / "z3b.npy", np.zeros(3, dtype=np.float32))
    cases = [
        # interpolation between points of different shapes
        (
            [
                "latent",
                "interpolate",
                ckpt,
                "--z-from",
                tmp_path / "z2.npy",
                "--z-to",
                tmp_path / "z3.npy",
            ],
            "same shape",
        ),
        # latent dimension of the request does not match the checkpoint's
        (
            [
                "latent",
                "interpolate",
                ckpt,
                "--z-from",
                tmp_path / "z3b.npy",
                "--z-to",
                tmp_path / "z3.npy",
            ],
            "--latent-dim",
        ),
        (["latent", "manifold", checkpoints["cae"] / "checkpoint.pt"], "--latent-dim"),
        # t-SNE on fewer points than the perplexity allows
        (["latent", "tsne", ckpt, "--n-points", "20", "--perplexity", "30"], "--perplexity"),
        # an attribute with no positive / negative examples
        (["latent", "attribute", ckpt, "--attribute", "class:42"], "no positive examples"),
        (["latent", "attribute", ckpt, "--attribute", "class:1", "--n-points", "1"], "--attribute"),
        (["latent", "attribute", ckpt, "--attribute", "bold"], "--attribute"),
        (["latent", "interpolate", ckpt, "--method", "cubic"], "--method"),
        (["latent", "grid", ckpt, "--corners", "0,1,2"], "--corners"),
        (["latent", "interpolate", tmp_path / "missing.pt"], "CHECKPOINT"),
        (["latent", "manifold", checkpoints["cvae"] / "checkpoint.pt"], "--label"),
    ]
    for argv, needle in cases:
        code, out, err = run(capsys, [*argv, "--out", tmp_path / "o"])
        assert code == 2, (argv, err)
        one_line_error(err, needle)


def test_train_and_novelty_bad_input(capsys, tmp_path):
    cases = [
        (["train", "dae", "--noise", "salt"], "--noise"),
        (["train", "dae", "--noise", "masking", "--noise-level", "1.5"], "--noise-level"),
        (["train", "ae", "--noise", "gaussian"], "--noise"),
        (["train", "sae", "--sparsity", "-1"], "--sparsity"),
        (["train", "cae", "--arch", "conv", "--data", "x.npy"], "--data"),
        (["train", "ae", "--arch", "rnn"], "--arch"),
        (["train", "ae", "--latent-dim", "0"], "--latent-dim"),
        (["train", "cvae", "--epochs", "0"], "--epochs"),
        (["novelty", "--model", "gan"], "--model"),
        (["novelty", "--holdout-class", "11"], "--holdout-class"),
    ]
    for argv, needle in cases:
        code, _, err = run(capsys, [*argv, "--out", tmp_path / "o", "--device", "cpu"])
        assert code == 2, (argv, err)
        one_line_error(err, needle)
    assert not (tmp_path / "o" / "checkpoint.pt").exists()


def test_novelty_command(capsys, tmp_path):
    code, out, err = run(
        capsys,
        [
            "novelty",
            "--model",
            "sae",
            "--holdout-class",
            "3",
            "--epochs",
            "1",
            "--hidden",
            "16",
            "--latent-dim",
            "4",
            "--device",
            "cpu",
            "--out",
            tmp_path,
            "--json",
        ],
    )
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["holdout_class"] == 3 and 0 <= metrics["auroc"]["reconstruction"] <= 1
    assert json.loads((tmp_path / "metrics.json").read_text())["auroc"] == metrics["auroc"]
