"""The bad-input matrix: every command, every class of bad input (issue 15).

Each case runs ``ppl-gen`` in-process (:func:`ppl_gen.cli.main`) and asserts the contract
of :mod:`ppl_gen.cli`: exit status 2, exactly one ``error:`` line on stderr that names the
flag, no traceback, and nothing written (no output folder, no checkpoint).  Every case
fails before any training, so the whole matrix takes seconds; the few tiny checkpoints it
needs are trained once per session.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest
import torch
from bad_input_files import CORRUPTIONS, write_mnist, write_rows

from ppl_gen.cli import command, main
from ppl_gen.core.checkpoint import save_checkpoint
from ppl_gen.core.errors import SEED_MAX

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

TINY = ["--epochs", "1", "--n-train", "50", "--hidden", "8", "--latent-dim", "2"]


def run(capsys, argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def snapshot(folder: Path) -> dict[str, int] | None:
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.fixture(scope="session")
def fx(tmp_path_factory):
    """Tiny checkpoints, fake MNIST folders and tiny arrays, made once."""
    base = tmp_path_factory.mktemp("fixtures")
    code = main(["train", "vae", *TINY, "--device", "cpu", "--out", str(base / "vae"), "--json"])
    assert code == 0
    ck = {"vae": base / "vae" / "checkpoint.pt"}
    state = torch.load(ck["vae"], weights_only=True)
    # Other kinds' checkpoints for --resume: the run's kind is what a resume checks first.
    for kind in ("gan", "autoencoder", "cvae"):
        (base / kind).mkdir()
        save_checkpoint(base / kind / "checkpoint.pt", {**state, "kind": kind})
        ck[kind] = base / kind / "checkpoint.pt"
    save_checkpoint(base / "incomplete.pt", {k: v for k, v in state.items() if k != "config"})
    save_checkpoint(base / "unknown_kind.pt", {**state, "kind": "no-such-kind"})
    spec = {**state["spec"], "model": {**state["spec"]["model"], "latent_dim": 3}}  # Z is 2
    save_checkpoint(base / "mismatch.pt", {**state, "spec": spec})
    (base / "garbage.pt").write_bytes(b"not a checkpoint")
    torch.save({"x": torch.zeros(1)}, base / "foreign.pt")
    for name in ("incomplete", "unknown_kind", "mismatch", "garbage", "foreign"):
        ck[name] = base / f"{name}.pt"
    mnist = {c: write_mnist(base / "mnist" / (c or "good"), c) for c in (None, *CORRUPTIONS)}
    rows = {n: write_rows(base / f"rows{n}.npy", n) for n in (1, 2, 3)}
    rows["labelled2"] = write_rows(base / "labelled2.npz", 2, labels=True)
    (base / "a_file").write_text("x")
    return {"ck": ck, "mnist": mnist, "rows": rows, "base": base}


# Every command with the arguments it needs to get past parsing (no training happens:
# each case below is refused first).  ``{ck:vae}`` is a checkpoint from the fixture.
COMMANDS = {
    "compare": ["compare"],
    "evaluate": ["evaluate", "{ck:vae}"],
    "novelty": ["novelty"],
    "train vae": ["train", "vae"],
    "train gan": ["train", "gan"],
    "train dcgan": ["train", "dcgan"],
    "train cgan": ["train", "cgan"],
    "train cyclegan": ["train", "cyclegan"],
    "train stylegan": ["train", "stylegan"],
    "train pix2pix": ["train", "pix2pix"],
    "train ae": ["train", "ae"],
    "train dae": ["train", "dae"],
    "train sae": ["train", "sae"],
    "train cae": ["train", "cae"],
    "train cvae": ["train", "cvae"],
    "train classifier": ["train", "classifier"],
    "train dann": ["train", "dann"],
    "latent interpolate": ["latent", "interpolate", "{ck:vae}"],
    "latent grid": ["latent", "grid", "{ck:vae}"],
    "latent manifold": ["latent", "manifold", "{ck:vae}"],
    "latent attribute": ["latent", "attribute", "{ck:vae}"],
    "latent tsne": ["latent", "tsne", "{ck:vae}"],
    "latent reconstruct": ["latent", "reconstruct", "{ck:vae}"],
}


def _tree_commands() -> set[str]:
    found, stack = set(), [(command(), "")]
    while stack:
        group, prefix = stack.pop()
        for name, sub in group.commands.items():
            path = f"{prefix} {name}".strip()
            if getattr(sub, "commands", None):
                stack.append((sub, path))
            else:
                found.add(path)
    return found


def _has_option(path: str, flag: str) -> bool:
    node = command()
    for part in path.split():
        node = node.commands[part]
    return any(flag in p.opts for p in node.params)


def expand(argv, fx, out: Path) -> list[str]:
    result = []
    for a in argv:
        a = str(a)
        if a.startswith("{ck:"):
            a = str(fx["ck"][a[4:-1]])
        elif a.startswith("{mnist:"):
            a = str(fx["mnist"][None if a[7:-1] == "good" else a[7:-1]])
        elif a.startswith("{rows:"):
            a = str(fx["rows"][a[6:-1] if not a[6:-1].isdigit() else int(a[6:-1])])
        elif a == "{out}":
            a = str(out)
        elif a.startswith("{base}"):
            a = str(fx["base"]) + a[6:]
        result.append(a)
    return result


def check_refused(capsys, argv, flag: str, watch: Path, before=None) -> str:
    code, _, err = run(capsys, argv)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), lines[0]
    assert flag in lines[0], (flag, lines[0])
    assert code == 2, (code, lines[0])
    assert snapshot(watch) == before, f"{watch} changed"
    return lines[0]


# --------------------------------------------------------------------------- the matrix

CASES: list = []


def case(cmd: str, extra: list, flag: str, id_: str, watch: str = "out") -> None:
    CASES.append(pytest.param(cmd, extra, flag, watch, id=f"{cmd}-{id_}".replace(" ", "-")))


# 1. unwritable --out: checked before any work, on every command.
for cmd in COMMANDS:
    case(cmd, ["--out", "{base}/a_file/sub"], "--out", "out-under-a-file", watch="none")
    case(cmd, ["--out", "{base}/a_file"], "--out", "out-is-a-file", watch="none")
    case(cmd, ["--out", "/proc/ppl_gen_out"], "--out", "out-unwritable", watch="none")

# 2. seeds out of range: one rule (0 .. 2**32 - 2**16) on every command that takes --seed.
for cmd in COMMANDS:
    for seed, name in ((-1, "negative"), (SEED_MAX + 1, "above-max"), (10**23, "huge")):
        case(cmd, ["--seed", str(seed)], "--seed", f"seed-{name}")

# 3. corrupted MNIST idx files: validated on load, before any training.
MNIST_COMMANDS = {
    "train vae": ["--data", "mnist"],
    "train cvae": ["--data", "mnist"],
    "train ae": ["--data", "mnist"],
    "train gan": ["--data", "mnist"],
    "compare": ["--data", "mnist"],
    "train dann": ["--target", "mnist"],
}
for cmd, data in MNIST_COMMANDS.items():
    for corruption in CORRUPTIONS:
        case(cmd, [*data, "--data-root", f"{{mnist:{corruption}}}"], "--data-root", corruption)

# 4. too few rows for the train / validation / test splits.
for cmd in ("train vae", "train ae", "train dae", "compare", "novelty"):
    for n in (1, 2, 3):
        case(cmd, ["--data", f"{{rows:{n}}}"], "--data", f"{n}-rows")
case("train cvae", ["--data", "{rows:labelled2}"], "--data", "2-labelled-rows")

# 5. absurd sizes: refused against the memory before anything is allocated.
for cmd in ("train vae", "compare", "train ae", "train cae", "train cvae", "novelty"):
    case(cmd, ["--latent-dim", "2000000000"], "--latent-dim", "latent-dim-2e9")
    case(cmd, ["--hidden", "4000000000"], "--hidden", "hidden-4e9")
for cmd in ("train gan", "train dcgan", "train cgan"):
    case(cmd, ["--latent-dim", "2000000000"], "--latent-dim", "latent-dim-2e9")
for cmd in ("train dcgan", "train cyclegan"):
    case(cmd, ["--ngf", "4000000000"], "--ngf", "ngf-4e9")
    case(cmd, ["--ndf", "4000000000"], "--ndf", "ndf-4e9")

# 6. IWAE-K evaluations beyond the documented limit (K x test points <= 1e9).
case("evaluate", ["--iwae-k", "100000000000", "--n-test", "1"], "--iwae-k", "iwae-1e11")
case("evaluate", ["--iwae-k", "10000000", "--n-test", "1000"], "--iwae-k", "iwae-1e10-total")
case("compare", ["--iwae-k", "100000000000", "--n-test", "1"], "--iwae-k", "iwae-1e11")
case("compare", ["--iwae-k", "10000000"], "--iwae-k", "iwae-1e7-digits")
case("novelty", ["--model", "vae", "--iwae-k", "100000000000"], "--iwae-k", "iwae-1e11")

# 7. wrong-kind, incomplete, spec-mismatched and unreadable checkpoints.
BAD_CHECKPOINTS = ("incomplete", "unknown_kind", "mismatch", "garbage", "foreign")
for bad in BAD_CHECKPOINTS:
    CASES.append(
        pytest.param("evaluate", [f"{{ck:{bad}}}"], "CHECKPOINT", "out", id=f"evaluate-{bad}")
    )
    for tool in ("interpolate", "manifold", "reconstruct"):
        CASES.append(
            pytest.param(
                f"latent {tool}", [f"{{ck:{bad}}}"], "CHECKPOINT", "out", id=f"latent-{tool}-{bad}"
            )
        )

# 8. options that would be silently ignored: refused.
for tool in ("interpolate", "grid", "manifold"):
    case(f"latent {tool}", ["--label", "3"], "--label", "label-on-unconditional-vae")
case("evaluate", ["--classifier", "x.pt"], "--classifier", "classifier-on-vae")
case("evaluate", ["--n-samples", "5"], "--n-samples", "n-samples-on-vae")
case("evaluate", ["--bsds-root", "."], "--bsds-root", "bsds-root-on-vae")

# 9. choice options: Click choices, refused with one line naming the flag.
CHOICES = {
    "train vae": ["--model", "--likelihood", "--binarize", "--guide", "--elbo", "--precision"],
    "compare": ["--likelihood", "--covariance", "--binarize"],
    "train gan": ["--loss", "--channels", "--precision"],
    "train cyclegan": ["--loss"],
    "train ae": ["--arch", "--activation", "--output", "--noise", "--binarize"],
    "train cvae": ["--likelihood", "--binarize", "--elbo"],
    "train dann": ["--arch", "--precision"],
    "latent interpolate": ["--method"],
    "latent reconstruct": ["--noise"],
    "novelty": ["--model"],
}
for cmd, flags in CHOICES.items():
    for flag in flags:
        case(cmd, [flag, "no-such-choice"], flag, f"choice{flag}")


@pytest.mark.parametrize("cmd, extra, flag, watch", CASES)
def test_bad_input_is_refused_before_any_work(cmd, extra, flag, watch, fx, tmp_path, capsys):
    if cmd not in _tree_commands():
        pytest.skip(f"{cmd} is not a command of this build")
    if not all(_has_option(cmd, a) for a in extra if a.startswith("--")):
        pytest.skip(f"{cmd} has no such option")
    out = tmp_path / "out"
    base = COMMANDS[cmd]
    if extra and extra[0].startswith("{ck:"):  # the case's own checkpoint replaces the VAE
        base = [a for a in base if not a.startswith("{ck:")]
    argv = expand([*base, *extra], fx, out)
    if "--out" not in argv:
        argv += ["--out", str(out)]
    argv += ["--device", "cpu"] if _has_option(cmd, "--device") else []
    watched = fx["base"] if watch == "none" else out
    check_refused(capsys, argv, flag, watched, snapshot(watched))


RESUME = {
    "train vae": "cvae",
    "train gan": "vae",
    "train ae": "cvae",
    "train dae": "vae",
    "train cvae": "autoencoder",
    "train cgan": "cvae",
}


@pytest.mark.parametrize("cmd, other", RESUME.items(), ids=list(RESUME))
def test_resume_from_another_kind_of_checkpoint_is_refused(cmd, other, fx, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(fx["ck"][other].parent, out)
    before = snapshot(out)
    argv = [*COMMANDS[cmd], "--resume", "--out", str(out), "--device", "cpu"]
    if cmd == "train cgan":
        argv += ["--data", "digits"]
    check_refused(capsys, argv, "--resume", out, before)


def test_full_disk_is_named_before_any_work(fx, tmp_path, capsys, monkeypatch):
    import ppl_gen.core.io as io

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.tempfile, "mkdtemp", full)
    out = tmp_path / "out"
    line = check_refused(capsys, ["train", "vae", "--out", out], "--out", out)
    assert "no space left on device" in line


def test_full_disk_while_writing_is_one_line(fx, tmp_path, capsys, monkeypatch):
    """ENOSPC from a writer itself (after the probe): one line, no partial file left."""
    import ppl_gen.core.io as io

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "_fsync_path", full)
    out = tmp_path / "out"
    argv = ["latent", "manifold", fx["ck"]["vae"], "--n", "3", "--out", out, "--device", "cpu"]
    code, _, err = run(capsys, argv)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [err.strip().splitlines()[0]]
    assert err.startswith("error: no space left on device")
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_compare_exits_non_zero_when_every_scheme_failed(tmp_path, capsys, monkeypatch):
    import ppl_gen.jobs.compare as job
    from ppl_gen.infer.training import TrainingDiverged

    def fail(name, *args, **kwargs):
        raise TrainingDiverged(f"{name}: the ELBO became NaN")

    monkeypatch.setattr(job, "_run_scheme", fail)
    argv = ["compare", "--n-train", "50", "--n-test", "10", "--iwae-k", "2", "--hidden", "8"]
    code, out, err = run(capsys, [*argv, "--out", tmp_path / "c", "--device", "cpu"])
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("error: every scheme failed")
    assert "failed" in out


def test_evaluate_out_is_honoured_for_vae_checkpoints(fx, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["evaluate", fx["ck"]["vae"], "--iwae-k", "2", "--n-test", "5", "--out", out]
    code, _, err = run(capsys, [*argv, "--test-refit-steps", "1", "--device", "cpu"])
    assert code == 0, err
    assert (out / "metrics.json").is_file()


# --------------------------------------------------------------------------- CLI polish


def _all_commands():
    stack = [(command(), "")]
    while stack:
        group, prefix = stack.pop()
        yield prefix or "ppl-gen", group
        for name, sub in getattr(group, "commands", {}).items():
            stack.append((sub, f"{prefix} {name}".strip()))


def test_every_option_of_every_command_has_help():
    missing = [
        f"{path} {param.opts[0]}"
        for path, cmd in _all_commands()
        for param in cmd.params
        if param.param_type_name == "option" and not (param.help or "").strip()
    ]
    assert missing == []


def test_choices_are_listed_in_help_and_completed(capsys):
    code, out, _ = run(capsys, ["train", "vae", "--help"])
    assert code == 0
    assert "<dynamic|static|none>" in out and "<amortised|mean-field>" in out
    node = command().commands["train"].commands["vae"]
    guide = next(p for p in node.params if p.name == "guide")
    ctx = node.make_context("vae", [], resilient_parsing=True)
    assert [c.value for c in guide.shell_complete(ctx, "am")] == ["amortised"]


def test_version_comes_from_the_package_metadata(capsys):
    from ppl_gen.cli.common import package_version

    code, out, err = run(capsys, ["--version"])
    assert code == 0 and err == ""
    assert out.strip() == f"ppl-gen {package_version()}"


def test_amortized_is_an_alias_of_amortised():
    from ppl_gen.jobs.compare import CompareConfig

    config = CompareConfig(schemes=["amortized", "mean-field"])
    assert config.resolved_schemes == ("amortised", "mean-field")
    config.validate()
