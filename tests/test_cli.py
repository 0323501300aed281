"""Tests for the ``ppl-gen`` command line (ppl_gen.cli).

Most calls go through :func:`ppl_gen.cli.main` in-process (fast); one test runs the real
console script in a subprocess to check the exit status and the one-line stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ppl_gen.jobs.train_vae
from ppl_gen.cli import main
from ppl_gen.core.checkpoint import load_checkpoint
from ppl_gen.infer.training import TrainingDiverged

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

TINY_COMPARE = [
    "compare",
    "--epochs",
    "1",
    "--n-train",
    "50",
    "--n-test",
    "10",
    "--iwae-k",
    "5",
    "--hidden",
    "8",
    "--test-refit-steps",
    "2",
    "--device",
    "cpu",
]
TINY_TRAIN = ["train", "vae", "--epochs", "1", "--n-train", "50", "--hidden", "8"]
SCHEMES = ("amortised", "mean-field")


def run(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, *names: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("error: "), line
    for name in names:
        assert name in line, (name, line)
    return line


def assert_no_temp_files(folder: Path) -> None:
    leftovers = [p.name for p in folder.rglob(".*")]
    assert leftovers == [], leftovers


# --------------------------------------------------------------------------- bad input


def _nan_npy(tmp: Path) -> list[str]:
    x = np.random.default_rng(0).uniform(size=(60, 4))
    x[3, 2] = np.nan
    np.save(tmp / "nan.npy", x)
    return ["--data", tmp / "nan.npy"]


def _inf_npy(tmp: Path) -> list[str]:
    x = np.random.default_rng(0).uniform(size=(60, 4))
    x[5, 1] = np.inf
    np.save(tmp / "inf.npy", x)
    return ["--data", tmp / "inf.npy", "--binarize", "none"]


BAD_COMPARE = [
    ("model", lambda t: ["--model", "foo"], "--model"),
    ("data", lambda t: ["--data", "foo"], "--data"),
    ("scheme", lambda t: ["--schemes", "foo"], "--schemes"),
    ("scheme-twice", lambda t: ["--schemes", "amortised,amortised"], "--schemes"),
    ("data-root", lambda t: ["--data", "mnist", "--data-root", t / "nope"], "--data-root"),
    ("conv-vae-on-digits", lambda t: ["--model", "conv-vae"], "--model"),
    ("nan-data", _nan_npy, "--data"),
    ("inf-data", _inf_npy, "--data"),
    ("missing-npy", lambda t: ["--data", t / "missing.npy"], "--data"),
    ("latent-dim-0", lambda t: ["--latent-dim", "0"], "--latent-dim"),
    ("latent-dim-negative", lambda t: ["--latent-dim", "-2"], "--latent-dim"),
    ("iwae-k-0", lambda t: ["--iwae-k", "0"], "--iwae-k"),
    ("epochs-0", lambda t: ["--epochs", "0"], "--epochs"),
    ("epochs-non-integer", lambda t: ["--epochs", "2.5"], "--epochs"),
    ("epochs-text", lambda t: ["--epochs", "many"], "--epochs"),
    ("batch-size-0", lambda t: ["--batch-size", "0"], "--batch-size"),
    ("n-train-too-big", lambda t: ["--n-train", "100000"], "--n-train"),
    ("hidden-text", lambda t: ["--hidden", "wide"], "--hidden"),
    ("hidden-0", lambda t: ["--hidden", "32,0"], "--hidden"),
    ("binarize", lambda t: ["--binarize", "sometimes"], "--binarize"),
    ("likelihood", lambda t: ["--likelihood", "poisson"], "--likelihood"),
    ("test-refit-steps-0", lambda t: ["--test-refit-steps", "0"], "--test-refit-steps"),
    ("device-text", lambda t: ["--device", "gpu"], "--device"),
    ("unknown-option", lambda t: ["--bogus", "1"], "--bogus"),
]


@pytest.mark.parametrize(
    "extra, flag", [c[1:] for c in BAD_COMPARE], ids=[c[0] for c in BAD_COMPARE]
)
def test_compare_bad_input_is_one_error_line_and_writes_nothing(extra, flag, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, [*TINY_COMPARE, *extra(tmp_path), "--out", out])
    assert code == 2
    assert_one_line_error(err, flag)
    assert stdout == ""
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("command", ["compare", "train"])
def test_cuda_without_cuda_is_a_bad_input(command, tmp_path, capsys):
    out = tmp_path / "out"
    base = TINY_COMPARE if command == "compare" else TINY_TRAIN
    code, _, err = run(capsys, [*base, "--device", "cuda", "--out", out])
    assert code == 2
    assert_one_line_error(err, "--device", "CUDA")
    assert not out.exists()


BAD_TRAIN = [
    ("guide", ["--guide", "foo"], "--guide"),
    ("elbo", ["--elbo", "foo"], "--elbo"),
    ("model", ["--model", "foo"], "--model"),
    ("conv-vae-on-digits", ["--model", "conv-vae"], "--model"),
    ("epochs-0", ["--epochs", "0"], "--epochs"),
    ("epochs-non-integer", ["--epochs", "1.5"], "--epochs"),
    ("latent-dim-0", ["--latent-dim", "0"], "--latent-dim"),
    ("hidden", ["--hidden", "8,,8"], "--hidden"),
    ("binarize", ["--binarize", "foo"], "--binarize"),
    ("likelihood", ["--likelihood", "foo"], "--likelihood"),
    ("data", ["--data", "foo"], "--data"),
    ("jit-batch-too-big", ["--elbo", "jit", "--batch-size", "64"], "--batch-size"),
]


@pytest.mark.parametrize("extra, flag", [c[1:] for c in BAD_TRAIN], ids=[c[0] for c in BAD_TRAIN])
def test_train_bad_input_is_one_error_line_and_writes_nothing(extra, flag, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, [*TINY_TRAIN, *extra, "--out", out])
    assert code == 2
    assert_one_line_error(err, flag)
    assert stdout == ""
    assert not out.exists()


@pytest.mark.parametrize("command", ["compare", "train"])
def test_out_that_is_a_file_is_rejected_before_training(command, tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("keep me")
    base = TINY_COMPARE if command == "compare" else TINY_TRAIN
    code, _, err = run(capsys, [*base, "--out", target])
    assert code == 2
    assert_one_line_error(err, "--out")
    assert target.read_text() == "keep me"


def _garbage_checkpoint(tmp: Path) -> Path:
    path = tmp / "garbage.pt"
    path.write_bytes(b"this is not a checkpoint at all")
    return path


def _foreign_checkpoint(tmp: Path) -> Path:
    path = tmp / "foreign.pt"
    torch.save({"state_dict": {}}, path)
    return path


@pytest.mark.parametrize(
    "make, extra, names",
    [
        (_garbage_checkpoint, [], ["CHECKPOINT", "garbage.pt"]),
        (_foreign_checkpoint, [], ["CHECKPOINT", "foreign.pt"]),
        (lambda t: t / "missing.pt", [], ["CHECKPOINT", "missing.pt"]),
        (_garbage_checkpoint, ["--iwae-k", "0"], ["--iwae-k"]),
    ],
    ids=["garbage", "foreign", "missing", "iwae-k-0"],
)
def test_evaluate_bad_checkpoint_is_one_error_line(make, extra, names, tmp_path, capsys):
    path = make(tmp_path)
    code, stdout, err = run(capsys, ["evaluate", path, *extra])
    assert code == 2
    assert_one_line_error(err, *names)
    assert stdout == ""


def test_console_script_exit_status_and_stderr(tmp_path):
    script = Path(sys.executable).with_name("ppl-gen")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "ppl_gen"]
    out = tmp_path / "out"
    proc = subprocess.run(
        [*command, "compare", "--epochs", "0", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert_one_line_error(proc.stderr, "--epochs")
    assert not out.exists()


def test_no_arguments_prints_help_and_exits_2(capsys):
    code, stdout, err = run(capsys, [])
    assert code == 2
    assert "Usage: ppl-gen" in err and "compare" in err and "evaluate" in err
    assert "Traceback" not in err and "error:" not in err
    code, _, err = run(capsys, ["train"])
    assert code == 2
    assert "Usage:" in err and "vae" in err
    code, stdout, _ = run(capsys, ["--help"])
    assert code == 0
    assert "Usage: ppl-gen" in stdout


def test_unknown_command_is_a_usage_error(capsys):
    code, _, err = run(capsys, ["frobnicate"])
    assert code == 2
    assert_one_line_error(err, "frobnicate")


def test_diverged_training_exits_1_with_one_line(tmp_path, capsys, monkeypatch):
    def diverge(*args, **kwargs):
        raise TrainingDiverged("non-finite loss at epoch 3, batch 2")

    monkeypatch.setattr(ppl_gen.jobs.train_vae, "train", diverge)
    code, _, err = run(capsys, [*TINY_TRAIN, "--out", tmp_path / "out"])
    assert code == 1
    assert_one_line_error(err, "epoch 3, batch 2")


def test_a_huge_learning_rate_exits_1_naming_the_explosion(tmp_path, capsys):
    out = tmp_path / "out"
    argv = [*TINY_TRAIN, "--batch-size", "10", "--lr", "1e6", "--device", "cpu", "--out", out]
    code, stdout, err = run(capsys, argv)
    assert code == 1 and stdout == ""
    line = assert_one_line_error(err, "exploded", "epoch 1", "lower the learning rate")
    assert "no checkpoint was written" in line
    assert not (out / "checkpoint.pt").exists()


# --------------------------------------------------------------------------- compare


SMOKE = [
    "compare",
    "--epochs",
    "3",
    "--n-train",
    "200",
    "--n-test",
    "50",
    "--iwae-k",
    "20",
    "--hidden",
    "32",
    "--test-refit-steps",
    "20",
]


def test_compare_smoke_run_json_and_files(tmp_path, capsys):
    """The main job's smoke run on digits (README settings, shrunk)."""
    out = tmp_path / "run"
    code, stdout, stderr = run(capsys, [*SMOKE, "--out", out, "--json"])
    assert code == 0, stderr
    metrics = json.loads(stdout)
    assert metrics == json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "digits"
    assert metrics["model"] == "vae"
    assert metrics["n_train"] == 200
    assert metrics["n_test"] == 50
    assert metrics["latent_dim"] == 2
    assert set(metrics["schemes"]) == {*SCHEMES, "semi-amortised"}  # the main job's default
    for name, m in metrics["schemes"].items():
        for key in ("test_elbo", "test_iwae", "train_seconds"):
            assert isinstance(m[key], float) and np.isfinite(m[key]), (name, key)
        assert m["iwae_k"] == 20
        assert m["epochs"] == 3
        assert m["test_elbo"] < 0 and m["train_seconds"] > 0
        # IWAE-K is a tighter bound than the ELBO (up to Monte Carlo noise).
        assert m["test_iwae"] >= m["test_elbo"] - 0.5, (name, m)
    files = {p.name for p in out.iterdir()}
    assert files == {
        "report.md",
        "metrics.json",
        "objective_vs_time.png",
        "khat_hist.png",
        "loss_curves.png",
        "samples.png",
        "reconstructions.png",
        "iwae_vs_k.png",
        "manifold_amortised.png",
        "manifold_mean-field.png",
        "manifold_semi-amortised.png",
    }
    for name in files - {"report.md", "metrics.json"}:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    report = (out / "report.md").read_text()
    assert "amortised" in report and "mean-field" in report
    assert_no_temp_files(out)


def test_compare_without_2d_latent_draws_no_manifold(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run(
        capsys,
        [*TINY_COMPARE, "--schemes", "amortised", "--latent-dim", "3", "--out", out, "--json"],
    )
    assert code == 0, err
    metrics = json.loads(stdout)
    assert list(metrics["schemes"]) == ["amortised"]
    assert metrics["latent_dim"] == 3
    assert not list(out.glob("manifold*"))
    assert {"report.md", "metrics.json", "loss_curves.png"} <= {p.name for p in out.iterdir()}
    assert_no_temp_files(out)


def test_compare_plain_output_names_the_report(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run(capsys, [*TINY_COMPARE, "--schemes", "mean-field", "--out", out])
    assert code == 0, err
    assert "mean-field" in stdout
    assert str((out / "report.md").resolve()) in stdout


# --------------------------------------------------------------------------- train / evaluate


@pytest.mark.parametrize("guide", SCHEMES)
def test_train_evaluate_round_trip_and_resume(guide, tmp_path, capsys):
    out = tmp_path / guide
    train_args = [
        "train",
        "vae",
        "--guide",
        guide,
        "--n-train",
        "100",
        "--batch-size",
        "50",
        "--hidden",
        "16",
        "--latent-dim",
        "2",
        "--device",
        "cpu",
        "--out",
        out,
        "--json",
    ]
    code, stdout, err = run(capsys, [*train_args, "--epochs", "2"])
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["epochs"] == 2 and len(summary["history"]["train_elbo"]) == 2
    ckpt = Path(summary["checkpoint"])
    assert ckpt == out / "checkpoint.pt"
    assert {p.name for p in out.iterdir()} == {
        "checkpoint.pt",
        "metrics.json",
        "loss_curves.png",
        "history.jsonl",
    }
    assert json.loads((out / "metrics.json").read_text()) == summary
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 2 and state["spec"]["guide"] == guide

    code, stdout, err = run(
        capsys,
        ["evaluate", ckpt, "--iwae-k", "10", "--n-test", "30"]
        + ["--test-refit-steps", "10", "--device", "cpu", "--json"],
    )
    assert code == 0, err
    result = json.loads(stdout)
    assert result["dataset"] == "digits"
    assert result["n_test"] == 30 and result["iwae_k"] == 10
    assert np.isfinite(result["test_elbo"]) and np.isfinite(result["test_iwae"])
    assert result["test_iwae"] >= result["test_elbo"] - 0.5

    code, stdout, err = run(capsys, [*train_args, "--epochs", "3", "--resume"])
    assert code == 0, err
    resumed = json.loads(stdout)
    assert resumed["epochs"] == 3
    assert resumed["history"]["epoch"] == [1, 2, 3]
    assert resumed["history"]["train_elbo"][:2] == summary["history"]["train_elbo"]
    assert resumed["iterations"] == 3 * 2
    assert load_checkpoint(ckpt)["epoch"] == 3
    assert_no_temp_files(out)


@pytest.mark.parametrize(
    "changed, flag",
    [(["--lr", "0.01"], "--lr 0.01"), (["--binarize", "none"], "--binarize 'none'")],
)
def test_a_resume_with_other_settings_is_refused_naming_the_flag(changed, flag, tmp_path, capsys):
    out = tmp_path / "out"
    base = [*TINY_TRAIN, "--device", "cpu", "--out", out]
    code, _, err = run(capsys, base)
    assert code == 0, err
    before = (out / "checkpoint.pt").read_bytes()
    code, stdout, err = run(capsys, [*base, "--epochs", "2", "--resume", *changed])
    assert code == 2 and stdout == ""
    assert_one_line_error(err, f"error: {flag} differs from the checkpoint's")
    assert (out / "checkpoint.pt").read_bytes() == before
