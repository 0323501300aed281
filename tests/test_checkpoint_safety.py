"""No command runs code from a checkpoint.

A crafted ``.pt`` file whose pickle calls a function on load (``__reduce__``) is handed to
every command that reads a checkpoint -- ``evaluate`` (also its ``--classifier``), every
``latent`` tool, and ``--resume`` of every ``train`` command.  Each must refuse it with one
line ``error: ...`` and exit status 2, before any training, and the payload (which would
write a marker file) must never run.  Finally the source is scanned: every ``torch.load``
call in ``ppl_gen/``, ``benchmarks/`` and ``tests/`` passes ``weights_only=True``.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
from pathlib import Path

import pytest
import torch

from ppl_gen.cli import main
from ppl_gen.core.checkpoint import FORMAT

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
HAVE_MNIST = (MNIST / "MNIST" / "raw").is_dir()
needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason="needs MNIST in ../shared/data/mnist")


class Payload:
    """Unpickling this calls ``exec`` on code that writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').write('payload ran')",))


def malicious(path: Path, marker: Path, *, tagged: bool) -> Path:
    """A ``torch.save`` file holding a :class:`Payload`; ``tagged``: also the keys of a
    real ppl_gen checkpoint (format tag, kind, weights), so only the payload is wrong."""
    state: dict = {"payload": Payload(marker)}
    if tagged:
        state = {
            "format": FORMAT,
            "kind": "vae",
            "config": {"epochs": 1},
            "model": {"w": torch.zeros(2)},
            "epoch": 1,
            **state,
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


@pytest.fixture(params=["plain", "tagged"])
def evil(request, tmp_path):
    """``(make(path) -> path, marker)``: writes a malicious checkpoint at ``path``."""
    marker = tmp_path / "PAYLOAD_RAN"
    return (lambda path: malicious(path, marker, tagged=request.param == "tagged")), marker


def test_the_payload_is_real(tmp_path):
    """Guard against a vacuous suite: a plain ``torch.load`` does run the payload."""
    marker = tmp_path / "PAYLOAD_RAN"
    path = malicious(tmp_path / "evil.pt", marker, tagged=True)
    torch.load(path, weights_only=False)  # noqa: S614  (the point of the test)
    assert marker.read_text() == "payload ran"


def refused(capsys, argv: list, marker: Path, watched: Path | None = None) -> str:
    """Run the CLI; assert exit 2, one ``error:`` line, no payload, nothing trained."""
    before = _digest(watched) if watched is not None else None
    files_before = _listing(watched.parent) if watched is not None else None
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert not marker.exists(), f"the checkpoint's code ran: {argv}"
    assert code == 2, (code, err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert "Traceback" not in err
    if watched is not None:  # refused before any training: nothing written
        assert _digest(watched) == before
        assert _listing(watched.parent) == files_before
    return lines[0]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ----------------------------------------------------------------- reading a checkpoint

READERS = {
    "evaluate": ["evaluate"],
    "latent interpolate": ["latent", "interpolate"],
    "latent grid": ["latent", "grid"],
    "latent manifold": ["latent", "manifold"],
    "latent attribute": ["latent", "attribute"],
    "latent tsne": ["latent", "tsne"],
    "latent reconstruct": ["latent", "reconstruct"],
}


@pytest.mark.parametrize("command", sorted(READERS))
def test_readers_refuse_a_malicious_checkpoint(capsys, tmp_path, evil, command):
    make, marker = evil
    path = make(tmp_path / "ckpt" / "checkpoint.pt")
    line = refused(
        capsys,
        [*READERS[command], path, "--device", "cpu", "--out", tmp_path / "o"],
        marker,
        watched=path,
    )
    assert "could run code" in line and str(path) in line, line


def test_the_same_checkpoint_without_payload_gets_past_the_load(capsys, tmp_path):
    """Control: a tagged file whose only fault is its kind fails later, at the kind."""
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": FORMAT, "kind": "nonsense", "epoch": 1}, path)
    code = main(["evaluate", str(path), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "could run code" not in err and "nonsense" in err, err


# ----------------------------------------------------------------- --resume

TINY_GAN = "--epochs 1 --latent-dim 4 --ngf 4 --ndf 4 --batch-size 16".split()
TINY_AE = "--epochs 1 --latent-dim 2 --hidden 8 --n-train 64".split()
MNIST_ARGS = ["--data-root", MNIST]
CYCLE = "--n-train 8 --epochs 1 --decay-epochs 0 --batch-size 4 --ngf 4 --ndf 4 --n-blocks 1"
DANN = "--n-train 32 --n-test 32 --epochs 1 --batch-size 16 --pad-points 16 --no-tsne"

RESUMERS = {
    "vae": ([*"train vae --data digits".split(), *TINY_AE], "checkpoint.pt"),
    "gan": ([*"train gan --data digits --hidden 8".split(), *TINY_GAN], "checkpoint.pt"),
    "dcgan": (
        [*"train dcgan --data mnist --n-train 32".split(), *MNIST_ARGS, *TINY_GAN],
        "checkpoint.pt",
    ),
    "cgan": (
        [*"train cgan --data mnist --n-train 32".split(), *MNIST_ARGS, *TINY_GAN],
        "checkpoint.pt",
    ),
    "cyclegan": (
        [*"train cyclegan --data-a mnist --data-b mnist".split(), *MNIST_ARGS, *CYCLE.split()],
        "checkpoint.pt",
    ),
    "dann": (
        [*"train dann --source mnist --target mnist".split(), *MNIST_ARGS, *DANN.split()],
        "source_only.pt",  # the first of its runs
    ),
    "ae": ([*"train ae --data digits".split(), *TINY_AE], "checkpoint.pt"),
    "dae": ([*"train dae --data digits".split(), *TINY_AE], "checkpoint.pt"),
    "sae": ([*"train sae --data digits".split(), *TINY_AE], "checkpoint.pt"),
    "cae": ([*"train cae --data digits".split(), *TINY_AE], "checkpoint.pt"),
    "cvae": ([*"train cvae --data digits".split(), *TINY_AE], "checkpoint.pt"),
}
NEEDS_MNIST = {"dcgan", "cgan", "cyclegan", "dann"}


@pytest.mark.parametrize(
    "family",
    [pytest.param(f, marks=needs_mnist) if f in NEEDS_MNIST else f for f in sorted(RESUMERS)],
)
def test_resume_refuses_a_malicious_checkpoint(capsys, tmp_path, evil, family):
    make, marker = evil
    argv, name = RESUMERS[family]
    out = tmp_path / "run"
    path = make(out / name)
    line = refused(
        capsys, [*argv, "--device", "cpu", "--out", out, "--resume"], marker, watched=path
    )
    assert "could run code" in line, line


@needs_mnist
def test_dann_refuses_a_malicious_dann_checkpoint(capsys, tmp_path, evil):
    """The DANN run's own checkpoint (``checkpoint.pt``, second of the experiment's runs)."""
    make, marker = evil
    argv, _ = RESUMERS["dann"]
    out = tmp_path / "run"
    path = make(out / "checkpoint.pt")
    code = main([str(a) for a in [*argv, "--device", "cpu", "--out", out, "--resume"]])
    err = capsys.readouterr().err
    assert not marker.exists()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "could run code" in err, err
    assert path.exists()


# ----------------------------------------------------------------- evaluate --classifier


@pytest.fixture(scope="module")
def gan_checkpoint(tmp_path_factory) -> Path:
    """A tiny GAN trained on 32 MNIST images for one epoch."""
    out = tmp_path_factory.mktemp("gan")
    argv = [
        "train", "gan", "--data", "mnist", *MNIST_ARGS, "--n-train", "32", "--hidden", "8",
        *TINY_GAN, "--device", "cpu", "--out", out, "--json",
    ]  # fmt: skip
    code = main([str(a) for a in argv])
    assert code == 0
    return out / "checkpoint.pt"


@needs_mnist
def test_evaluate_refuses_a_malicious_classifier(capsys, tmp_path, evil, gan_checkpoint):
    make, marker = evil
    judge = make(tmp_path / "judge" / "lenet_mnist.pt")
    argv = [
        "evaluate", gan_checkpoint, "--classifier", judge, "--n-samples", "16",
        "--n-test", "32", "--device", "cpu",
    ]  # fmt: skip
    line = refused(capsys, argv, marker, watched=judge)
    assert "could run code" in line and str(judge) in line, line


# ----------------------------------------------------------------- the source


def _torch_load_calls(path: Path) -> list[tuple[int, bool]]:
    """``(line, passes weights_only=True)`` for every ``torch.load(...)`` call in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if not (
            isinstance(f, ast.Attribute)
            and f.attr == "load"
            and isinstance(f.value, ast.Name)
            and f.value.id == "torch"
        ):
            continue
        ok = any(
            k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in node.keywords
        )
        calls.append((node.lineno, ok))
    return calls


def test_every_torch_load_is_weights_only():
    this = Path(__file__).resolve()
    found, bad = 0, []
    for folder in ("ppl_gen", "benchmarks", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for line, ok in _torch_load_calls(path):
                if path.resolve() == this and not ok:
                    continue  # test_the_payload_is_real loads the payload on purpose
                found += 1
                if not ok:
                    bad.append(f"{path.relative_to(ROOT)}:{line}")
    assert found >= 3  # the scan sees the calls (checkpoint.py, mnistm.py, ...)
    assert not bad, "torch.load without weights_only=True: " + ", ".join(bad)


def test_no_other_unpickler_reads_files():
    """Neither ``pickle.load`` nor ``np.load(allow_pickle=True)`` in the library."""
    bad = []
    for path in sorted((ROOT / "ppl_gen").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for needle in ("pickle.load", "allow_pickle=True", "dill.load", "joblib.load"):
            if needle in text:
                bad.append(f"{path.relative_to(ROOT)}: {needle}")
    assert not bad, bad
