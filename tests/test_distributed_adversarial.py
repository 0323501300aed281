"""Data-parallel adversarial trainers on 2 CPU processes (gloo backend, loopback only).

One ``torchrun`` job (``python -m torch.distributed.run --nproc-per-node 2 --master-addr
127.0.0.1``) runs this file as a worker script: it trains DANN on both ranks (batch-norm
network with separate source / target passes, uneven shards; the source-only baseline),
DCGAN and a conditional GAN (batch norm in G and D; 2 critic steps per generator step) and
CycleGAN, runs ``ppl-gen train dann`` and ``ppl-gen train gan`` in the process group,
records what it saw under ``OUT/harness`` and ends with an injected crash of rank 1.  The
single-process references are computed here, in the pytest process, on the same global
batches.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torchrun_harness import record_written_files, run_worker_job

from ppl_gen.adaptation.dann import ArchConfig
from ppl_gen.adaptation.dann_trainer import DANNConfig, DomainData, train_dann
from ppl_gen.core.distributed import DistributedContext, GlobalBatchNorm, single_process
from ppl_gen.data.images import ImageData
from ppl_gen.gan.cycle_trainer import CycleGANConfig, train_cyclegan
from ppl_gen.gan.trainer import GANConfig, train_gan

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


def gan_images(n: int = 24, seed: int = 0) -> ImageData:
    """``n`` random 28x28 grey images with 3 classes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    return ImageData("random", x, torch.arange(n) % 3, 3)


GAN_RUNS = {  # global batches of 8 images: 4 per rank
    "dcgan": {"model": "dcgan"},
    "cgan": {"model": "cgan", "n_critic": 2, "loss": "lsgan"},
}


def gan_config(key: str, **kw) -> GANConfig:
    return GANConfig(
        **GAN_RUNS[key], epochs=2, batch_size=8, latent_dim=8, ngf=4, ndf=4, device="cpu",
        progress=False, check_collapse=False, **kw,
    )  # fmt: skip


def gan_state(result) -> dict[str, torch.Tensor]:
    return {
        **{"G." + k: v for k, v in params(result.generator).items()},
        **{"D." + k: v for k, v in params(result.discriminator).items()},
    }


def cycle_run(pool_size: int = 0, out: Path | None = None):
    """Tiny CycleGAN, global batches of 4 images per domain (2 per rank)."""
    a, b = gan_images(12, 1), gan_images(12, 2)
    config = CycleGANConfig(
        epochs=2, decay_epochs=1, batch_size=4, ngf=4, ndf=4, n_blocks=1, n_down=1,
        pool_size=pool_size, device="cpu", progress=False, out=str(out) if out else None,
    )  # fmt: skip
    result = train_cyclegan(
        ImageData("a", a.images, None, None), ImageData("b", b.images, None, None), config
    )
    state = {f"{n}.{k}": v for n, net in result.nets.items() for k, v in params(net).items()}
    return result.history, state


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
    import ppl_gen.adaptation.dann_trainer as dann_trainer
    from ppl_gen.cli import main
    from ppl_gen.core.distributed import RankFailed, init_from_env
    from ppl_gen.core.errors import PplGenError

    ctx = init_from_env("cpu")
    assert ctx.world_size == 2 and ctx.backend == "gloo"
    written = record_written_files()
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

    # DCGAN and cGAN: global batch norm in G and D, shared noise, DDP.
    for key in GAN_RUNS:
        result = train_gan(gan_images(), gan_config(key, out=str(out / f"rank{ctx.rank}" / key)))
        rec[key] = {"history": result.history, "params": gan_state(result)}
    # Interrupted after 1 of 2 epochs and resumed on 2 ranks (per-rank random states).
    part = str(out / f"rank{ctx.rank}" / "cgan_part")
    train_gan(gan_images(), gan_config("cgan", out=part), stop_after=1)
    resumed = train_gan(gan_images(), gan_config("cgan", out=part), resume=True)
    rec["cgan_resumed"] = {"history": resumed.history, "params": gan_state(resumed)}
    try:
        train_gan(gan_images(), gan_config("dcgan", loss="wgan-gp"))
    except PplGenError as exc:
        rec["wgan_gp_error"] = str(exc)
    # CycleGAN without image pool (comparable with one process), then with per-rank pools.
    rec["cycle"] = dict(zip(("history", "params"), cycle_run(), strict=True))
    cycle_run(pool_size=3, out=out / f"rank{ctx.rank}" / "cycle")

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
    rec["cli_code"], rec["cli_stdout"] = code, stdout.getvalue()
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(
            [
                "train", "gan", "--data", "digits", "--n-train", "64", "--epochs", "1",
                "--batch-size", "16", "--hidden", "16,32", "--latent-dim", "4", "--device",
                "cpu", "--out", str(out / "cli_gan"), "--json", "--precision", "bf16",
            ]
        )  # fmt: skip
    rec["cli_gan_code"], rec["cli_gan_stdout"], rec["written"] = (
        code,
        stdout.getvalue(),
        list(written),
    )
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


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The 2-process worker job (one process group for every check)."""
    out = tmp_path_factory.mktemp("ddp_adv")
    proc, recs = run_worker_job(__file__, out)
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


@pytest.mark.parametrize("key", list(GAN_RUNS))
def test_gans_on_two_ranks_match_one_process_on_the_same_global_batches(job, key):
    _, _, (r0, r1) = job
    single = train_gan(gan_images(), gan_config(key))
    ref = gan_state(single)
    for rec in (r0, r1):
        for name in ("d_loss", "g_loss"):
            assert rec[key]["history"][name] == pytest.approx(single.history[name], rel=1e-5)
        for name, value in ref.items():  # weights and batch-norm running statistics
            torch.testing.assert_close(rec[key]["params"][name], value, rtol=1e-4, atol=1e-5)
    for name, value in r0[key]["params"].items():
        assert torch.equal(value, r1[key]["params"][name]), name
    start = gan_state(train_gan(gan_images(), replace(gan_config(key), lr=1e-12)))
    assert any(not torch.allclose(start[k], v, atol=1e-4) for k, v in ref.items() if "weight" in k)


def test_gan_resumed_on_two_ranks_equals_the_uninterrupted_run(job):
    _, _, (r0, r1) = job
    for rec in (r0, r1):
        assert rec["cgan_resumed"]["history"]["epoch"] == [1, 2]
        for name, value in rec["cgan"]["params"].items():
            assert torch.equal(rec["cgan_resumed"]["params"][name], value), name


def test_cyclegan_on_two_ranks_matches_one_process_without_pool(job):
    _, _, (r0, r1) = job
    history, ref = cycle_run()
    for rec in (r0, r1):
        for name in ("g_loss", "cycle_loss", "identity_loss", "d_a_loss", "d_b_loss"):
            assert rec["cycle"]["history"][name] == pytest.approx(history[name], rel=1e-5)
        # Adam divides by sqrt(v): for weights whose gradients are ~0 the summation order of
        # two shards vs one batch moves them by up to ~3e-5 after 6 steps (lr 2e-4); a wrong
        # split of the batches moves them by O(lr) per step.
        for name, value in ref.items():
            torch.testing.assert_close(rec["cycle"]["params"][name], value, rtol=1e-4, atol=1e-4)
    for name, value in r0["cycle"]["params"].items():
        assert torch.equal(value, r1["cycle"]["params"][name]), name


def test_cyclegan_checkpoint_holds_every_ranks_pool(job):
    from ppl_gen.core.checkpoint import load_checkpoint

    out, _, _ = job
    state = load_checkpoint(out / "rank0" / "cycle" / "checkpoint.pt")
    assert state["world_size"] == 2 and len(state["pools_ranks"]) == 2
    pools = [r["A"]["images"] for r in state["pools_ranks"]]
    assert [p.shape[0] for p in pools] == [3, 3]  # full pools of 3 ...
    assert not torch.equal(pools[0], pools[1])  # ... of each rank's own fakes


def test_wgan_gp_is_refused_on_several_processes(job):
    _, _, recs = job
    for rec in recs:
        assert rec["wgan_gp_error"].startswith("loss wgan-gp cannot run on 2 processes")


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
    assert str(out / "rank0" / "dcgan" / "checkpoint.pt") in r0["written"]
    assert not (out / "rank1").exists()
    assert r0["cli_gan_code"] == r1["cli_gan_code"] == 0 and r1["cli_gan_stdout"] == ""
    gan = json.loads(r0["cli_gan_stdout"])
    assert gan["processes"] == 2 and gan["config"]["precision"] == "bf16"
    assert {"checkpoint.pt", "metrics.json", "loss_curves.png", "samples_epoch_001.png"} <= {
        p.name for p in (out / "cli_gan").iterdir()
    }
    assert {"checkpoint.pt", "source_only.pt", "metrics.json", "loss_curves.png"} <= {
        p.name for p in (out / "cli_dann").iterdir()
    }


def test_a_crashed_rank_ends_the_job_with_a_clear_error_and_resume_continues(job):
    from ppl_gen.core.checkpoint import load_checkpoint

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
    from ppl_gen.core.distributed import sync_batchnorm

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


def test_gan_bf16_and_deterministic_modes():
    plain = train_gan(gan_images(), gan_config("dcgan"))
    half = train_gan(gan_images(), gan_config("dcgan", precision="bf16"))
    assert all(math.isfinite(v) for v in half.history["d_loss"] + half.history["g_loss"])
    assert half.history["d_loss"] != plain.history["d_loss"]  # bf16 really ran
    assert next(half.generator.parameters()).dtype == torch.float32
    runs = [
        gan_state(train_gan(gan_images(), gan_config("dcgan", deterministic=True)))
        for _ in range(2)
    ]
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not torch.are_deterministic_algorithms_enabled()


def test_cyclegan_bf16_trains():
    a, b = gan_images(8, 1), gan_images(8, 2)
    config = CycleGANConfig(
        epochs=1, decay_epochs=0, batch_size=4, ngf=4, ndf=4, n_blocks=1, n_down=1,
        pool_size=2, device="cpu", progress=False, precision="bf16",
    )  # fmt: skip
    result = train_cyclegan(a, b, config)
    assert all(math.isfinite(result.history[k][0]) for k in ("g_loss", "d_a_loss"))


@pytest.mark.parametrize("command", ["gan", "cyclegan"])
def test_cli_gans_refuse_bad_precision(tmp_path, capsys, command):
    from ppl_gen.cli import main

    code = main(["train", command, "--precision", "fp8", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "--precision': 'fp8' is not one of 'fp32', 'bf16'" in capsys.readouterr().err


def test_cli_gan_deterministic_flag_trains(tmp_path):
    from ppl_gen.cli import main

    out = tmp_path / "gan"
    args = ["train", "gan", "--data", "digits", "--n-train", "32", "--epochs", "1"]
    code = main(
        [
            *args,
            "--hidden",
            "8,8",
            "--batch-size",
            "16",
            "--deterministic",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 1 and metrics["config"]["deterministic"] is True
    assert not torch.are_deterministic_algorithms_enabled()


def test_cli_dann_refuses_bad_precision(tmp_path, capsys):
    from ppl_gen.cli import main

    code = main(["train", "dann", "--precision", "fp16", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "--precision': 'fp16' is not one of 'fp32', 'bf16'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_dann_refuses_more_processes_than_images_per_half_batch():
    from ppl_gen.core.errors import PplGenError

    source, target = domains()
    ctx = DistributedContext(rank=0, world_size=8, device=torch.device("cpu"))
    with pytest.raises(PplGenError, match="^batch_size 14"):
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
