"""``ppl-gen train dann`` / ``ppl-gen evaluate`` on DANN checkpoints: outputs, and bad
input → one line ``error: ...`` and exit status 2, nothing written."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ppl_gen.cli import main


def run(capsys, argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _npz(path: Path, channels: int, n: int = 64, size: int = 28, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    shape = (n, size, size) if channels == 0 else (n, channels, size, size)
    np.savez(
        path,
        x_train=rng.random(shape, dtype=np.float32),
        y_train=rng.integers(0, 10, n),
        x_test=rng.random(shape, dtype=np.float32),
        y_test=rng.integers(0, 10, n),
    )
    return path


def _fake_mnist(root: Path, n: int = 32) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for prefix in ("train", "t10k"):
        for kind, shape in (("images-idx3", (n, 28, 28)), ("labels-idx1", (n,))):
            header = struct.pack(">HBB", 0, 8, len(shape)) + struct.pack(f">{len(shape)}I", *shape)
            data = rng.integers(0, 256 if kind.startswith("images") else 10, shape).astype(np.uint8)
            (raw / f"{prefix}-{kind}-ubyte").write_bytes(header + data.tobytes())
    return root


def test_train_dann_writes_metrics_and_checkpoints_and_evaluate_reads_them(tmp_path, capsys):
    src, tgt = _npz(tmp_path / "s.npz", 0), _npz(tmp_path / "t.npz", 3, seed=1)
    out = tmp_path / "run"
    code, stdout, err = run(
        capsys,
        [
            "train",
            "dann",
            "--source",
            src,
            "--target",
            tgt,
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--pad-points",
            "32",
            "--no-tsne",
            "--train-on-target",
            "--device",
            "cpu",
            "--out",
            out,
            "--json",
        ],
    )
    assert code == 0, err
    metrics = json.loads(stdout)
    for key in (
        "target_accuracy",
        "source_accuracy",
        "source_only_target_accuracy",
        "proxy_a_distance_before",
        "proxy_a_distance_after",
        "train_on_target_accuracy",
    ):
        assert isinstance(metrics[key], float)
    assert (
        json.loads((out / "metrics.json").read_text())["target_accuracy"]
        == metrics["target_accuracy"]
    )
    assert {p.name for p in out.iterdir()} >= {
        "checkpoint.pt",
        "source_only.pt",
        "target_only.pt",
        "loss_curves.png",
    }
    code, stdout, err = run(
        capsys, ["evaluate", out / "checkpoint.pt", "--device", "cpu", "--json"]
    )
    assert code == 0, err
    assert json.loads(stdout)["target_accuracy"] == metrics["target_accuracy"]


def _bad_photos(tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    Image.fromarray(np.zeros((20, 40, 3), dtype=np.uint8)).save(folder / "a.jpg")
    return ["--bsds-root", folder]


def _empty_photos(tmp_path):
    (tmp_path / "empty").mkdir()
    return ["--bsds-root", tmp_path / "empty"]


@pytest.mark.parametrize(
    "extra,message",
    [
        (lambda p: ["--bsds-root", p / "missing"], "--bsds-root"),
        (_empty_photos, "--bsds-root .*no photographs"),
        (_bad_photos, "smaller than the 28x28 crop"),
        (
            lambda p: ["--source", _npz(p / "a.npz", 3), "--target", _npz(p / "b.npz", 4)],
            "channels",
        ),
        (
            lambda p: ["--source", _npz(p / "a.npz", 3), "--target", _npz(p / "b.npz", 3, size=14)],
            "sizes",
        ),
        (lambda p: ["--source", "svhn"], "--source"),
        (lambda p: ["--target", p / "nope.npz"], "--target"),
        (lambda p: ["--arch", "vgg"], "--arch"),
        (lambda p: ["--batch-size", "33"], "--batch-size"),
        (lambda p: ["--epochs", "0"], "--epochs"),
        (lambda p: ["--pad-points", "4"], "^error: --pad-points must be at least 8"),
        (lambda p: ["--lr", "nan"], "^error: --lr must be a positive number"),
        (lambda p: ["--device", "tpu"], "--device"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(extra, message, tmp_path, capsys):
    import re

    mnist = _fake_mnist(tmp_path / "mnist")
    (tmp_path / "photos").mkdir()
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(tmp_path / "photos" / "p.jpg")
    out = tmp_path / "out"
    argv = [
        "train",
        "dann",
        "--data-root",
        mnist,
        "--bsds-root",
        tmp_path / "photos",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        out,
        *extra(tmp_path),
    ]
    code, stdout, err = run(capsys, argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in err and not out.exists()


def test_resume_with_a_changed_setting_is_refused_naming_the_flag(tmp_path, capsys):
    src, tgt = _npz(tmp_path / "s.npz", 0, n=32), _npz(tmp_path / "t.npz", 3, n=32, seed=1)
    out = tmp_path / "run"
    argv = ["train", "dann", "--source", src, "--target", tgt, "--epochs", "1"]
    argv += ["--batch-size", "16", "--pad-points", "16", "--no-tsne", "--device", "cpu"]
    argv += ["--out", out, "--json"]
    code, _, err = run(capsys, argv)
    assert code == 0, err
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")}
    code, stdout, err = run(capsys, [*argv, "--resume", "--lr", "0.05"])
    assert code == 2 and stdout == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --lr 0.05 differs"), err
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.pt")} == before  # untouched
    code, stdout, err = run(capsys, [*argv, "--resume", "--epochs", "2"])  # allowed
    assert code == 0, err
    history = json.loads(stdout)["history"]
    assert history["dann"]["epoch"] == [1, 2] and history["source_only"]["epoch"] == [1, 2]
