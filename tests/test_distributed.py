"""Data-parallel training and evaluation on 2 CPU processes (gloo backend, loopback only).

Two ``torchrun`` jobs are launched (``python -m torch.distributed.run --nproc-per-node 2
--master-addr 127.0.0.1``): the first runs this file as a worker script that performs every
library check in one process group, records what it saw under ``OUT/harness`` and ends
with an injected crash of rank 1; the second runs ``-m ppl_gen evaluate`` as a user would.
The single-process references are computed here, in the pytest process.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn
from torchrun_harness import record_written_files, run_worker_job, torchrun

from ppl_gen.core.distributed import DistributedContext, single_process
from ppl_gen.data.datasets import DataSplits
from ppl_gen.infer.training import TrainConfig, train
from ppl_gen.lvm.builders import ModelSpec, build_guide, build_model
from ppl_gen.lvm.plates import data_plate

N_DELTA = 11  # global batches of 5, 5, 1: uneven shards, and an empty one on rank 1
CRASH_AFTER_CALLS = 8  # 2 discovery traces (enumeration, parameters) + 2 epochs x 3 batches


# ----------------------------------------------------------------------------- fixtures


def synthetic(n: int = 24, d: int = 6, binarize: str = "dynamic", seed: int = 0) -> DataSplits:
    """``n`` training rows of ``d`` values in [0, 1]; binary validation / test rows."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n + 16, d, generator=g)
    held_out = torch.bernoulli(x[n:], generator=g) if binarize != "none" else x[n:]
    return DataSplits(
        "synthetic", x[:n], held_out[:8], held_out[8:], None, None, None, (d,), binarize
    )


def delta_model(x, indices=None, size=None):
    """``z_i ~ N(0, 1)``, ``x_i ~ N(w z_i + b, I)`` with global ``pyro.param`` sites."""
    w = pyro.param("w", torch.tensor(0.5))
    b = pyro.param("b", torch.zeros(x.shape[1]))
    with data_plate(x, indices, size):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(w * z.unsqueeze(-1) + b, 1.0).to_event(1), obs=x)


def delta_guide(x, indices=None, size=None):
    """Point mass ``z_i = loc_i``: a per-datapoint ``pyro.param`` (its log q is 0, so the
    ELBO is deterministic and 1-vs-2-process losses can be compared exactly)."""
    loc = pyro.param("loc", lambda: torch.linspace(-1.0, 1.0, N_DELTA))
    with data_plate(x, indices, size):
        pyro.sample("z", dist.Delta(loc[indices]))


def delta_config() -> TrainConfig:
    return TrainConfig(
        epochs=3, batch_size=5, lr=0.05, elbo="trace", val_every=0, progress=False, device="cpu"
    )


def delta_state() -> dict[str, torch.Tensor]:
    return {k: pyro.param(k).detach().clone() for k in ("w", "b", "loc")}


def vae(n_train: int, guide: str = "mean-field", seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(ModelSpec("vae", 6, 2, (8,), "bernoulli"))
    return model, build_guide(guide, model, n_train, (8,))


def vae_config(epochs: int, checkpoint: str | None = None) -> TrainConfig:
    return TrainConfig(
        epochs=epochs,
        batch_size=8,
        lr=1e-2,
        val_every=1,
        val_refit_steps=3,
        checkpoint=checkpoint,
        progress=False,
        device="cpu",
    )


class Crashing(nn.Module):
    """Wraps a model; on ``crash_rank`` its call number ``after + 1`` raises."""

    def __init__(self, inner: nn.Module, after: int, crash_rank: int, rank: int) -> None:
        super().__init__()
        self.inner, self.after, self.crash, self.rank, self.calls = (
            inner,
            after,
            crash_rank,
            rank,
            0,
        )

    def forward(self, x, indices=None, size=None):
        self.calls += 1
        if self.rank == self.crash and self.calls > self.after:
            raise RuntimeError(f"injected failure on rank {self.rank}")
        return self.inner(x, indices, size)


def em_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0, 0.0], [4.0, 0.0, 1.0], [0.0, 4.0, -1.0]])
    x = centres[torch.arange(101) % 3] + torch.randn(101, 3, generator=g)
    mix = torch.randn(3, 5, generator=g)
    return x, x @ mix + 0.3 * torch.randn(101, 5, generator=g)  # GMM rows, PPCA/FA rows


def em_fits(dist_ctx: DistributedContext | None) -> dict[str, list[float]]:
    """Average log-likelihood after each EM iteration of a GMM (full, diag), PPCA and FA."""
    from ppl_gen.models import PPCA, FactorAnalysis, GaussianMixture

    x_gmm, x_lin = em_data()
    out = {}
    for name, model, x in (
        ("gmm-full", GaussianMixture(3, 3, "full"), x_gmm),
        ("gmm-diag", GaussianMixture(3, 3, "diag"), x_gmm),
        ("ppca", PPCA(5, 2), x_lin),
        ("fa", FactorAnalysis(5, 2), x_lin),
    ):
        kwargs = {"max_iter": 15, "tol": 0.0, "seed": 0}
        if dist_ctx is not None:
            x, kwargs["dist"] = dist_ctx.shard(x), dist_ctx
        out[name] = model.em(x, **kwargs).objective
        out[name + "-loglik"] = model.log_marginal(em_data()[0 if "gmm" in name else 1]).tolist()
    return out


def scheme_em(dist_ctx: DistributedContext | None) -> dict[str, list[float]]:
    """The ``em`` scheme of ``ppl-gen compare`` on PPCA: training objective, test IWAE."""
    from ppl_gen.infer.schemes import SchemeSettings, fit_em
    from ppl_gen.models import PPCA

    _, x = em_data()
    splits = DataSplits("lin", x[:80], x[80:80], x[80:], None, None, None, (5,), "none")
    res = fit_em(PPCA(5, 2), splits, SchemeSettings(iwae_k=5, em_max_iter=10), dist=dist_ctx)
    return {"objective": res.history.objective, "iwae": res.bounds.iwae.tolist()}


def ppca_bounds(dist_ctx: DistributedContext | None):
    """IWAE-7 of 13 rows under PPCA with its exact posterior as the proposal."""
    from ppl_gen.guides.exact import ExactPosteriorGuide
    from ppl_gen.infer.evaluation import evaluate_on
    from ppl_gen.models import PPCA

    _, x = em_data()
    model = PPCA(5, 2)
    model.em(x, max_iter=5)
    ev = evaluate_on(model, ExactPosteriorGuide(model), x[:13], 7, dist=dist_ctx)
    return ev.bounds, model.log_marginal(x[:13])


def ddp_step(net: nn.Module, rows: list[int]) -> None:
    """One SGD step (lr 0.1) on the mean squared output of ``rows`` of a fixed table."""
    x = torch.arange(30.0).reshape(10, 3)[rows] / 10
    net(x).square().mean().backward()
    with torch.no_grad():
        for p in net.parameters():
            p -= 0.1 * p.grad


# ----------------------------------------------------------------------------- worker


def worker(out: Path) -> None:
    """Runs on every rank under torchrun; records results in ``out/harness/rank<r>.pt``."""
    from ppl_gen.cli import main
    from ppl_gen.core.distributed import RankFailed, init_from_env

    ctx = init_from_env("cpu")
    assert ctx.world_size == 2 and ctx.backend == "gloo"
    written = record_written_files()
    rec: dict = {"rank": ctx.rank}

    # SVI with a deterministic ELBO: losses and parameters against one process (in pytest).
    pyro.clear_param_store()
    result = train(delta_model, delta_guide, synthetic(N_DELTA, 3, "none"), delta_config())
    rec["delta_elbo"] = result.history["train_elbo"]
    rec["delta_params"] = delta_state()

    # VAE, mean-field guide (per-datapoint nn.Parameters), dynamic binarisation; then the
    # same run interrupted after 2 epochs and resumed, on 2 ranks.
    data = synthetic()
    pyro.clear_param_store()
    model, guide = vae(24)
    train(model, guide, data, vae_config(3))
    rec["vae_params"] = [p.detach().clone() for p in [*model.parameters(), *guide.parameters()]]
    ckpt = out / f"rank{ctx.rank}" / "checkpoint.pt"  # only rank 0's may appear
    pyro.clear_param_store()
    model, guide = vae(24)
    train(model, guide, data, vae_config(2, str(ckpt)))
    pyro.clear_param_store()
    model, guide = vae(24, seed=1)
    resumed = train(model, guide, data, vae_config(3, str(ckpt)), resume=True)
    rec["resumed_params"] = [p.detach().clone() for p in [*model.parameters(), *guide.parameters()]]
    rec["resumed_epochs"] = resumed.history["epoch"]

    # The adoption path of the GAN / DANN trainers: DistributedSampler + DDP.
    torch.manual_seed(0)
    net = ctx.wrap(nn.Linear(3, 1))
    sampler = ctx.sampler(range(10), shuffle=True, seed=0)
    sampler.set_epoch(1)
    rec["sampler_idx"] = list(sampler)
    ddp_step(net, rec["sampler_idx"])
    rec["ddp_params"] = [p.detach().clone() for p in net.module.parameters()]

    rec["em"] = em_fits(ctx)
    rec["fit_em"] = scheme_em(ctx)
    bounds, _ = ppca_bounds(ctx)
    rec["iwae"], rec["elbo"] = bounds.iwae, bounds.elbo

    # The command line in this process group: rank 0 alone prints and writes.
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(
            [
                "train", "vae", "--data", "digits", "--n-train", "64", "--epochs", "2",
                "--hidden", "8", "--latent-dim", "2", "--batch-size", "16", "--device",
                "cpu", "--out", str(out / "cli"), "--json", "--precision", "bf16",
            ]
        )  # fmt: skip
    rec["cli_code"], rec["cli_stdout"], rec["written"] = code, stdout.getvalue(), list(written)
    harness = out / "harness"
    harness.mkdir(exist_ok=True)
    torch.save(rec, harness / f"rank{ctx.rank}.pt")
    ctx.barrier()

    # Rank 1 crashes in epoch 3; rank 0 must stop with a clear error, checkpoint intact.
    pyro.clear_param_store()
    inner, guide = vae(24, "amortised")
    crashing = Crashing(inner, CRASH_AFTER_CALLS, crash_rank=1, rank=ctx.rank)
    config = vae_config(4, str(out / "crash" / "checkpoint.pt"))
    config.val_every = 0
    try:
        train(crashing, guide, data, config)
    except RankFailed as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


# ----------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The 2-process worker job (one process group for every check)."""
    out = tmp_path_factory.mktemp("ddp")
    proc, recs = run_worker_job(__file__, out)
    return out, proc, recs


def test_svi_loss_and_parameters_match_one_process_on_the_same_global_batches(job):
    _, _, recs = job
    pyro.clear_param_store()
    single = train(delta_model, delta_guide, synthetic(N_DELTA, 3, "none"), delta_config())
    ref = delta_state()
    for rec in recs:
        assert rec["delta_elbo"] == pytest.approx(single.history["train_elbo"], rel=1e-6)
        for key, value in ref.items():
            torch.testing.assert_close(rec["delta_params"][key], value, rtol=1e-5, atol=1e-6)
    # ... and the loss really moved (the comparison is not between two untrained states).
    assert single.history["train_elbo"][-1] > single.history["train_elbo"][0] + 0.1


def test_parameters_identical_across_ranks_and_resume_continues_exactly(job):
    _, _, (r0, r1) = job
    for key in ("vae_params", "resumed_params"):
        assert len(r0[key]) == len(r1[key]) > 0
        for a, b in zip(r0[key], r1[key], strict=True):
            assert torch.equal(a, b)
    # The 2-epoch run resumed to 3 epochs equals the uninterrupted 3-epoch run bit for bit
    # (shared minibatch order, each rank's Pyro random state restored).
    assert r0["resumed_epochs"] == [1, 2, 3]
    for a, b in zip(r0["vae_params"], r0["resumed_params"], strict=True):
        assert torch.equal(a, b)
    # Training changed the parameters (they are not identical merely by being untouched).
    model, guide = vae(24)
    start = [p.detach() for p in [*model.parameters(), *guide.parameters()]]
    assert any(not torch.equal(a, b) for a, b in zip(start, r0["vae_params"], strict=True))


def test_sampler_and_ddp_wrapper_average_like_one_process(job):
    _, _, (r0, r1) = job
    assert sorted(r0["sampler_idx"] + r1["sampler_idx"]) == list(range(10))
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    ddp_step(net, list(range(10)))  # the global batch (two equal halves) in one process
    for a, b, ref in zip(r0["ddp_params"], r1["ddp_params"], net.parameters(), strict=True):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, ref.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_with_pinned_transfer_and_bf16():
    data = synthetic()
    on_gpu = data.to("cuda")
    assert torch.equal(on_gpu.train.cpu(), data.train)
    model, guide = vae(24, "amortised")
    config = vae_config(2)
    config.device, config.precision = "cuda", "bf16"
    result = train(model, guide, data, config)
    assert all(math.isfinite(v) for v in result.history["train_elbo"])
    assert next(model.parameters()).device.type == "cuda"


def test_em_on_two_ranks_gives_the_one_process_log_likelihood(job):
    _, _, recs = job
    ref = em_fits(None)
    for rec in recs:
        for name, values in ref.items():  # float64 objectives; float32 log p(x_i) per row
            rel = 1e-6 if name.endswith("loglik") else 1e-9
            assert rec["em"][name] == pytest.approx(values, rel=rel), name
    assert ref["gmm-full"][-1] > ref["gmm-full"][0]  # EM made progress
    ref = scheme_em(None)
    for rec in recs:
        assert rec["fit_em"]["objective"] == pytest.approx(ref["objective"], rel=1e-9)
        assert rec["fit_em"]["iwae"] == pytest.approx(ref["iwae"], rel=1e-5)


def test_iwae_gathered_from_two_ranks_equals_one_process_in_order(job):
    _, _, recs = job
    bounds, exact = ppca_bounds(single_process("cpu"))
    for rec in recs:
        assert rec["iwae"].shape == (13,)
        torch.testing.assert_close(rec["iwae"], bounds.iwae, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(rec["elbo"], bounds.elbo, rtol=1e-5, atol=1e-4)
        # Exact posterior as proposal: every weight is p(x_i), so the order is checkable.
        torch.testing.assert_close(rec["iwae"], exact, rtol=1e-5, atol=1e-3)


def test_only_rank_zero_writes_files_and_prints(job):
    out, _, (r0, r1) = job
    assert r1["written"] == [] and r1["cli_stdout"] == ""
    assert r0["cli_code"] == r1["cli_code"] == 0
    summary = json.loads(r0["cli_stdout"])
    assert summary["processes"] == 2 and summary["precision"] == "bf16"
    assert math.isfinite(summary["final_train_elbo"])
    assert str(out / "rank0" / "checkpoint.pt") in r0["written"]
    assert not (out / "rank1").exists()
    assert {"checkpoint.pt", "metrics.json", "loss_curves.png"} <= {
        p.name for p in (out / "cli").iterdir()
    }


def test_a_crashed_rank_ends_the_job_with_a_clear_error_and_resume_continues(job):
    out, proc, _ = job
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "injected failure on rank 1" in text
    # The surviving rank either reports the lost partner itself or was stopped by torchrun.
    if "error: rank 0 of 2" in text:
        assert "another rank crashed" in text and "checkpoint" in text
    ckpt = out / "crash" / "checkpoint.pt"
    from ppl_gen.core.checkpoint import load_checkpoint

    state = load_checkpoint(ckpt)
    assert state["epoch"] == 2 and state["world_size"] == 2
    pyro.clear_param_store()
    inner, guide = vae(24, "amortised", seed=5)
    model = Crashing(inner, after=10**9, crash_rank=-1, rank=0)
    config = vae_config(3, str(ckpt))
    config.val_every = 0
    result = train(model, guide, synthetic(), config, resume=True)
    assert result.history["epoch"] == [1, 2, 3]
    assert result.history["train_elbo"][:2] == state["history"]["train_elbo"]
    assert load_checkpoint(ckpt)["epoch"] == 3


def test_torchrun_ppl_gen_evaluate_splits_the_test_set(job):
    out, _, _ = job
    proc = torchrun(
        "-m", "ppl_gen", "evaluate", str(out / "cli" / "checkpoint.pt"), "--iwae-k", "20",
        "--n-test", "31", "--device", "cpu", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)  # exactly one JSON document: rank 0 alone prints
    assert result["processes"] == 2 and result["n_test"] == 31
    assert result["test_elbo"] <= result["test_iwae"] < 0


# ----------------------------------------------------------------------------- one process


@pytest.mark.parametrize("n", [12, 13])
def test_shard_follows_distributed_sampler_and_gather_inverts_it(n):
    from torch.utils.data import DistributedSampler

    items = torch.arange(n) * 10
    parts = [DistributedContext(rank=r, world_size=3).shard(items) for r in range(3)]
    assert sorted(torch.cat(parts).tolist()) == items.tolist()  # no row twice, none lost
    assert [len(p) for p in parts] == [DistributedContext(r, 3).shard_size(n) for r in range(3)]
    if n % 3 == 0:  # where the sampler needs no padding, the rules agree exactly
        for r, part in enumerate(parts):
            sampler = DistributedSampler(range(n), num_replicas=3, rank=r, shuffle=False)
            assert (part // 10).tolist() == list(sampler)


def test_without_torchrun_everything_is_one_process(monkeypatch):
    from ppl_gen.core.distributed import init_from_env

    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    ctx = init_from_env("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)
    t = torch.arange(5.0)
    assert ctx.shard(t) is t and ctx.gather_shards(t) is t
    assert ctx.all_reduce_sum(t.clone()).tolist() == t.tolist()
    assert ctx.wrap(nn.Linear(2, 2)).__class__ is nn.Linear
    assert ctx.pin_memory is False and ctx.rank_zero_only(lambda: 7)() == 7


def test_bf16_runs_matrix_products_in_bf16_and_hands_on_float32():
    from ppl_gen.core.precision import bf16_networks

    torch.manual_seed(0)
    layer, x = nn.Linear(64, 64), torch.randn(8, 64)
    with bf16_networks("cpu"):
        y = layer(x)
    assert y.dtype == torch.float32  # what distributions and log-densities see
    assert not torch.equal(y, layer(x))  # ... computed from bfloat16 inputs
    torch.testing.assert_close(y, layer(x), rtol=0.05, atol=0.05)
    assert layer(x).dtype == torch.float32  # the hook is gone after the block


def test_bf16_trains_and_the_bounds_stay_fp32():
    from ppl_gen.infer.bounds import evaluate_bounds

    data = synthetic(binarize="static")
    model, guide = vae(24, "amortised")
    config = vae_config(3)
    config.precision = "bf16"
    result = train(model, guide, data, config)
    assert all(math.isfinite(v) for v in result.history["train_elbo"])
    pyro.set_rng_seed(3)
    plain = evaluate_bounds(model, guide, data.test, k=4)
    pyro.set_rng_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = evaluate_bounds(model, guide, data.test, k=4)
    assert inside.iwae.dtype == torch.float32
    assert torch.equal(inside.iwae, plain.iwae) and torch.equal(inside.elbo, plain.elbo)


def test_deterministic_mode_reproduces_a_run_and_is_switched_off_after():
    runs = []
    for _ in range(2):
        pyro.clear_param_store()
        model, guide = vae(24)
        config = vae_config(2)
        config.deterministic = True
        train(model, guide, synthetic(), config)
        runs.append([p.detach().clone() for p in model.parameters()])
        assert not torch.are_deterministic_algorithms_enabled()
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


def test_cli_deterministic_flag_trains(tmp_path):
    from ppl_gen.cli import main

    out = tmp_path / "det"
    args = ["train", "vae", "--epochs", "1", "--n-train", "64", "--hidden", "8"]
    code = main([*args, "--latent-dim", "2", "--deterministic", "--out", str(out), "--json"])
    assert code == 0
    assert json.loads((out / "metrics.json").read_text())["processes"] == 1
    assert not torch.are_deterministic_algorithms_enabled()


def test_compare_refuses_to_run_under_torchrun(monkeypatch, capsys):
    from ppl_gen.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["compare", "--epochs", "1"]) == 2
    assert "compare runs as one process" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--precision", "fp16"], "--precision': 'fp16' is not one of 'fp32', 'bf16'"),
        (["--precision", "bf16", "--elbo", "jit"], "--precision bf16 does not combine"),
    ],
)
def test_cli_refuses_bad_precision(tmp_path, capsys, args, message):
    from ppl_gen.cli import main

    code = main(["train", "vae", "--epochs", "1", "--out", str(tmp_path / "o"), *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
