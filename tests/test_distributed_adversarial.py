"""Data-parallel adversarial trainers on 2 CPU processes (gloo backend, loopback only).

One ``torchrun`` job (``python -m torch.distributed.run --nproc-per-node 2 --master-addr
127.0.0.1``) runs this file as a worker script: it trains DANN on both ranks (batch-norm
network with separate source / target passes, uneven shards; the source-only baseline),
runs ``ppl-gen train dann`` in the process group, records what it saw under
``OUT/harness`` and ends with an injected crash of rank 1.  The single-process references
are computed here, in the pytest process, on the same global batches.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ppl_gen.adversarial.dann import ArchConfig
from ppl_gen.adversarial.dann_trainer import DANNConfig, DomainData, train_dann
from ppl_gen.distributed import DistributedContext, GlobalBatchNorm, single_process

# Batch norm everywhere, no dropout: a 2-rank step can then equal one process exactly.
TINY_BN = ArchConfig(
    image_size=12,
    conv_channels=(6,),
    kernel_size=3,
    batch_norm=True,
    dropout=0.0,
    label_hidden=(16,),
    domain_hidden=(16,),
)
CRASH_AFTER_STEPS = 5  # DANN steps (3 per epoch): rank 1 dies in epoch 2


# ----------------------------------------------------------------------------- fixtures


def domains(n: int = 21, seed: int = 0) -> tuple[DomainData, DomainData]:
    """Two 3-channel 12x12 domains of ``n`` images; the target is brighter and noisier."""
    g = torch.Generator().manual_seed(seed)
    ys = torch.randint(0, 4, (n,), generator=g)
    xs = 0.3 * torch.rand(n, 3, 12, 12, generator=g)
    for i, c in enumerate((1 + 2 * ys).tolist()):
        xs[i, :, 2:10, c : c + 2] += 0.6
    xt = (0.4 + 0.6 * torch.rand(n, 3, 12, 12, generator=g)).clamp(0, 1)
    return (
        DomainData("src", xs, ys, xs, ys),
        DomainData("tgt", xt, None, xt, ys),
    )


def dann_config(mode: str = "dann", **kw) -> DANNConfig:
    """Global steps of 7 source + 7 target images: shards of 4 and 3 on two ranks."""
    return DANNConfig(
        mode=mode, epochs=2, batch_size=14, lr=0.05, device="cpu", progress=False, **kw
    )


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def write_npz(path: Path, n: int, rgb: bool, seed: int) -> None:
    """A tiny 28x28 digit-like domain for the command line (``--source`` / ``--target``)."""
    g = np.random.default_rng(seed)
    shape = (n, 3, 28, 28) if rgb else (n, 28, 28)
    x = g.random(shape, dtype=np.float32) * 0.5
    y = g.integers(0, 10, n)
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)


# ----------------------------------------------------------------------------- worker


def worker(out: Path) -> None:
    """Runs on every rank under torchrun; records results in ``out/harness/rank<r>.pt``."""
    import ppl_gen.adversarial.dann_trainer as dann_trainer
    import ppl_gen.io
    from ppl_gen.cli import main
    from ppl_gen.distributed import RankFailed, init_from_env

    ctx = init_from_env("cpu")
    assert ctx.world_size == 2 and ctx.backend == "gloo"
    written: list[str] = []
    atomic = ppl_gen.io.atomic_path

    @contextlib.contextmanager
    def counting(path):  # every file ppl_gen writes goes through atomic_path
        written.append(str(path))
        with atomic(path) as tmp:
            yield tmp

    ppl_gen.io.atomic_path = counting
    rec: dict = {"rank": ctx.rank}

    # DANN: batch norm with per-domain passes, uneven shards (4 + 3 of each half-batch).
    source, target = domains()
    for key, mode, kw in (
        ("dann", "dann", {}),
        ("joint", "dann", {"separate_batches": False}),
        ("source_only", "source-only", {}),
    ):
        ckpt = out / f"rank{ctx.rank}" / f"{key}.pt"  # only rank 0's may appear
        result = train_dann(
            source, target, dann_config(mode, checkpoint=str(ckpt), **kw), arch=TINY_BN
        )
        rec[key] = {"history": result.history, "params": params(result.model)}
        rec[key + "_bn_types"] = sorted({type(m).__name__ for m in result.model.modules()})

    # The command line in this process group: rank 0 alone prints and writes.
    write_npz(out / f"src{ctx.rank}.npz", 24, False, 0)  # numpy's own write, not counted
    write_npz(out / f"tgt{ctx.rank}.npz", 24, True, 1)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(
            [
                "train", "dann", "--source", str(out / f"src{ctx.rank}.npz"), "--target",
                str(out / f"tgt{ctx.rank}.npz"), "--epochs", "1", "--batch-size", "8",
                "--pad-points", "8", "--no-tsne", "--device", "cpu", "--out",
                str(out / "cli_dann"), "--json", "--precision", "bf16",
            ]
        )  # fmt: skip
    rec["cli_code"], rec["cli_stdout"], rec["written"] = code, stdout.getvalue(), list(written)
    harness = out / "harness"
    harness.mkdir(exist_ok=True)
    torch.save(rec, harness / f"rank{ctx.rank}.pt")
    ctx.barrier()

    # Rank 1 crashes in epoch 2; rank 0 must stop with a clear error, checkpoint intact.
    real, calls = dann_trainer.dann_losses, [0]

    def crashing(*args, **kwargs):
        calls[0] += 1
        if ctx.rank == 1 and calls[0] > CRASH_AFTER_STEPS:
            raise RuntimeError("injected failure on rank 1")
        return real(*args, **kwargs)

    dann_trainer.dann_losses = crashing
    config = dann_config(checkpoint=str(out / "crash" / "checkpoint.pt"))
    config.epochs = 3
    try:
        train_dann(source, target, config, arch=TINY_BN)
    except RankFailed as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


# ----------------------------------------------------------------------------- tests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, timeout: float = 100) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2`` on loopback, one thread per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The 2-process worker job (one process group for every check)."""
    out = tmp_path_factory.mktemp("ddp_adv")
    proc = torchrun(__file__, str(out))
    harness = out / "harness"
    if not (harness / "rank0.pt").exists() or not (harness / "rank1.pt").exists():
        pytest.fail(f"worker job failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    recs = [torch.load(harness / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    return out, proc, recs


@pytest.mark.parametrize(
    "key, mode, kw",
    [
        ("dann", "dann", {}),
        ("joint", "dann", {"separate_batches": False}),
        ("source_only", "source-only", {}),
    ],
)
def test_dann_on_two_ranks_matches_one_process_on_the_same_global_batches(job, key, mode, kw):
    _, _, (r0, r1) = job
    source, target = domains()
    single = train_dann(source, target, dann_config(mode, **kw), arch=TINY_BN)
    ref = params(single.model)
    for rec in (r0, r1):
        hist = rec[key]["history"]
        for name in ("label_loss", "domain_loss", "domain_accuracy", "lambda", "lr"):
            if single.history[name][0] is None:
                assert hist[name] == single.history[name]
            else:
                assert hist[name] == pytest.approx(single.history[name], rel=1e-5), name
        assert rec[key]["params"].keys() == ref.keys()
        for name, value in ref.items():  # weights and batch-norm running statistics
            torch.testing.assert_close(rec[key]["params"][name], value, rtol=1e-4, atol=1e-5)
    # Every rank holds the very same network (DDP's averaged gradients, global batch norm).
    for name, value in r0[key]["params"].items():
        assert torch.equal(value, r1[key]["params"][name]), name
    # Training moved the network: the comparison is not between two untouched states.
    untrained = train_dann(source, target, replace(dann_config(mode, **kw), lr=1e-12), arch=TINY_BN)
    assert any(
        not torch.allclose(params(untrained.model)[k], v, atol=1e-3)
        for k, v in ref.items()
        if v.is_floating_point()
    )


def test_the_returned_network_is_a_plain_dann(job):
    _, _, (r0, _) = job
    assert "BatchNorm2d" in r0["dann_bn_types"] and "GlobalBatchNorm" not in r0["dann_bn_types"]


def test_only_rank_zero_writes_files_and_prints(job):
    out, _, (r0, r1) = job
    assert r1["written"] == [] and r1["cli_stdout"] == ""
    assert r0["cli_code"] == r1["cli_code"] == 0
    summary = json.loads(r0["cli_stdout"])
    assert summary["processes"] == 2 and summary["config"]["precision"] == "bf16"
    assert 0.0 <= summary["target_accuracy"] <= 1.0
    assert math.isfinite(summary["history"]["dann"]["label_loss"][0])
    assert str(out / "rank0" / "dann.pt") in r0["written"]
    assert not (out / "rank1").exists()
    assert {"checkpoint.pt", "source_only.pt", "metrics.json", "loss_curves.png"} <= {
        p.name for p in (out / "cli_dann").iterdir()
    }


def test_a_crashed_rank_ends_the_job_with_a_clear_error_and_resume_continues(job):
    from ppl_gen.checkpoint import load_checkpoint

    out, proc, _ = job
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "injected failure on rank 1" in text
    # The surviving rank either reports the lost partner itself or was stopped by torchrun.
    if "error: rank 0 of 2" in text:
        assert "another rank crashed" in text and "checkpoint" in text
    ckpt = out / "crash" / "checkpoint.pt"
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 1 and state["world_size"] == 2 and len(state["rng_ranks"]) == 2
    source, target = domains()
    config = dann_config(checkpoint=str(ckpt))
    config.epochs = 3
    result = train_dann(source, target, config, arch=TINY_BN, resume=True)
    assert result.history["epoch"] == [1, 2, 3]
    assert result.history["label_loss"][:1] == state["history"]["label_loss"]
    assert load_checkpoint(ckpt)["epoch"] == 3


# ----------------------------------------------------------------------------- one process


def test_global_batch_norm_is_plain_batch_norm_in_one_process():
    torch.manual_seed(0)
    x = torch.randn(6, 3, 4, 4)
    plain = torch.nn.BatchNorm2d(3)
    ours = GlobalBatchNorm(3)
    torch.testing.assert_close(ours(x), plain(x))
    torch.testing.assert_close(ours.running_var, plain.running_var)
    from ppl_gen.distributed import sync_batchnorm

    assert sync_batchnorm(plain, single_process("cpu")) is plain


def test_dann_bf16_trains_and_accuracy_is_fp32():
    source, target = domains()
    result = train_dann(source, target, dann_config(precision="bf16"), arch=TINY_BN)
    assert all(math.isfinite(v) for v in result.history["label_loss"])
    assert next(result.model.parameters()).dtype == torch.float32
    plain = train_dann(source, target, dann_config(), arch=TINY_BN)
    assert result.history["label_loss"] != plain.history["label_loss"]  # bf16 really ran
    assert result.history["label_loss"] == pytest.approx(plain.history["label_loss"], rel=0.05)


def test_dann_deterministic_mode_reproduces_a_run_and_is_switched_off_after():
    source, target = domains()
    runs = [
        params(train_dann(source, target, dann_config(deterministic=True), arch=TINY_BN).model)
        for _ in range(2)
    ]
    assert not torch.are_deterministic_algorithms_enabled()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_cli_dann_refuses_bad_precision(tmp_path, capsys):
    from ppl_gen.cli import main

    code = main(["train", "dann", "--precision", "fp16", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "--precision must be one of fp32, bf16" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_dann_refuses_more_processes_than_images_per_half_batch():
    from ppl_gen.errors import PplGenError

    source, target = domains()
    ctx = DistributedContext(rank=0, world_size=8, device=torch.device("cpu"))
    with pytest.raises(PplGenError, match="--batch-size 14"):
        train_dann(source, target, dann_config(), arch=TINY_BN, dist=ctx)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_dann_on_cuda_with_bf16_and_pinned_copies():
    source, target = domains()
    config = dann_config(precision="bf16")
    config.device = "cuda"
    result = train_dann(source, target, config, arch=TINY_BN)
    assert all(math.isfinite(v) for v in result.history["label_loss"])
    assert next(result.model.parameters()).device.type == "cuda"


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
