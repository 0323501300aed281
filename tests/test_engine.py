"""The training engine (:mod:`ppl_gen.engine`) on a toy task: a linear regression trained
with SGD or Adam on random data, a named generator for the minibatch order and the global
torch stream for a noise term (so both kinds of random state must survive a resume)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from ppl_gen.core.checkpoint import FORMAT
from ppl_gen.core.distributed import DistributedContext, single_process
from ppl_gen.core.errors import PplGenError
from ppl_gen.core.io import LOCK_NAME, TEMP_MARKER
from ppl_gen.engine import (
    LoopConfig,
    Task,
    TrainingDiverged,
    data_fingerprint,
    fit,
    seed_everything,
    settings_record,
)


@dataclasses.dataclass
class ToyConfig:
    lr: float = 0.05
    optimiser: str = "sgd"
    batch_size: int = 8
    epochs: int = 2
    seed: int = 0


def toy_data(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(n, 1, generator=g)
    return x, y


class ToyTask:
    """Linear regression; ``poison`` maps an iteration to the loss value it reports."""

    def __init__(self, config: ToyConfig, data=None, poison=None, ckpt: Path | None = None):
        self.config = config
        seed_everything(config.seed)
        self.model = nn.Linear(3, 1)
        cls = torch.optim.SGD if config.optimiser == "sgd" else torch.optim.Adam
        self.opt = cls(self.model.parameters(), lr=config.lr)
        self.x, self.y = data if data is not None else toy_data()
        self.order = torch.Generator().manual_seed(config.seed + 1)
        self.poison = poison or {}
        self.ckpt = ckpt
        self.written: list[int] = []
        self.restored: dict | None = None
        self.lock_seen: list[bool] = []

    def components(self):
        return {"model": self.model, "optimizer": self.opt}

    def generators(self):
        return {"order": self.order}

    def batches(self, epoch: int):
        perm = torch.randperm(len(self.x), generator=self.order)
        b = self.config.batch_size
        return [perm[i : i + b] for i in range(0, len(perm), b)]

    def step(self, idx, iteration: int):
        if self.ckpt is not None:
            self.lock_seen.append((self.ckpt.parent / LOCK_NAME).exists())
        x = self.x[idx] + 0.01 * torch.randn(len(idx), 3)  # global stream
        loss = nn.functional.mse_loss(self.model(x), self.y[idx])
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        value = self.poison.get(iteration, loss.detach())
        return {"loss": value, "size": float(len(idx)), "weight": len(idx)}

    def write_epoch(self, epoch: int, history: dict) -> None:
        self.written.append(epoch)

    def after_restore(self, state: dict) -> None:
        self.restored = state


def loop_for(config: ToyConfig, ckpt: Path | None, **kw) -> LoopConfig:
    data = kw.pop("data", None)
    x, y = data if data is not None else toy_data()
    return LoopConfig(
        epochs=config.epochs,
        kind="toy",
        settings=settings_record(config),
        data_fingerprint=data_fingerprint(x, y),
        meta={"spec": {"inputs": 3}},
        checkpoint=ckpt,
        seed=config.seed,
        progress=False,
        **kw,
    )


def run(config: ToyConfig, ckpt: Path | None, data=None, ctx=None, **kw):
    task = ToyTask(config, data=data, ckpt=ckpt)
    result = fit(task, loop_for(config, ckpt, data=data, **kw), ctx or single_process("cpu"))
    return task, result


def same_state(a: ToyTask, b: ToyTask) -> None:
    for name in ("model", "optimizer"):
        sa, sb = a.components()[name].state_dict(), b.components()[name].state_dict()
        flat_a, flat_b = _tensors(sa), _tensors(sb)
        assert flat_a.keys() == flat_b.keys()
        for key in flat_a:
            va, vb = flat_a[key], flat_b[key]
            if isinstance(va, torch.Tensor):
                assert torch.equal(va, vb), (name, key)
            else:
                assert va == vb, (name, key)
    assert torch.equal(a.order.get_state(), b.order.get_state())


def _tensors(obj, prefix="") -> dict[str, torch.Tensor]:
    out = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_tensors(v, f"{prefix}/{k}"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(_tensors(v, f"{prefix}/{i}"))
    else:
        out[prefix] = torch.tensor(float(obj)) if isinstance(obj, (int, float)) else obj
    return out


def test_toy_task_satisfies_the_protocol():
    assert isinstance(ToyTask(ToyConfig()), Task)


@pytest.mark.parametrize("optimiser", ["sgd", "adam"])
def test_resume_is_bit_exact(tmp_path, optimiser):
    config = ToyConfig(optimiser=optimiser, epochs=3)
    straight, r_straight = run(config, tmp_path / "a" / "checkpoint.pt")
    global_after = torch.get_rng_state()
    ckpt = tmp_path / "b" / "checkpoint.pt"
    first, r_first = run(config, ckpt, stop_after=1)
    assert r_first.epochs == 1 and first.written == [1]
    torch.randn(17)  # disturb the global stream: the resume must restore it
    resumed, r_resumed = run(config, ckpt, resume=True)
    assert r_resumed.resumed_from == 1 and r_resumed.epochs == 3
    assert resumed.restored is not None and resumed.restored["epoch"] == 1
    same_state(straight, resumed)
    assert r_resumed.history["loss"] == r_straight.history["loss"]
    assert r_resumed.iterations == r_straight.iterations == 15
    # the global stream ends where the uninterrupted run's did
    assert torch.equal(torch.get_rng_state(), global_after)


def test_longer_epochs_on_resume_continue(tmp_path):
    config = ToyConfig(epochs=2)
    straight, r_straight = run(dataclasses.replace(config, epochs=4), tmp_path / "a" / "c.pt")
    # "epochs" is a setting that may change (default may_change): N -> 2N
    ckpt = tmp_path / "b" / "c.pt"
    run(config, ckpt)
    longer, r_longer = run(dataclasses.replace(config, epochs=4), ckpt, resume=True)
    assert r_longer.epochs == 4 and r_longer.history["epoch"] == [1, 2, 3, 4]
    same_state(straight, longer)
    assert r_longer.history["loss"] == r_straight.history["loss"]


def test_resume_of_a_finished_run_trains_nothing(tmp_path):
    ckpt = tmp_path / "c.pt"
    first, _ = run(ToyConfig(), ckpt)
    again, result = run(ToyConfig(), ckpt, resume=True)
    assert result.epochs == 2 and again.written == []
    same_state(first, again)


def test_resume_without_a_checkpoint_starts_fresh(tmp_path):
    _, result = run(ToyConfig(), tmp_path / "none" / "c.pt", resume=True)
    assert result.resumed_from == 0 and result.epochs == 2


def test_resume_refuses_a_changed_setting_naming_it(tmp_path):
    ckpt = tmp_path / "c.pt"
    run(ToyConfig(), ckpt, stop_after=1)
    with pytest.raises(PplGenError, match=r"^lr 0\.1 differs from the checkpoint's 0\.05"):
        run(ToyConfig(lr=0.1), ckpt, resume=True)
    with pytest.raises(PplGenError, match=r"^optimiser 'adam' differs"):
        run(ToyConfig(optimiser="adam"), ckpt, resume=True)
    # allowed when the family lists it in may_change
    _, result = run(ToyConfig(lr=0.1), ckpt, resume=True, may_change=frozenset({"epochs", "lr"}))
    assert result.epochs == 2


def test_resume_refuses_other_data(tmp_path):
    ckpt = tmp_path / "c.pt"
    run(ToyConfig(), ckpt, stop_after=1)
    other = toy_data(seed=5)
    with pytest.raises(PplGenError, match="same shapes, different content"):
        run(ToyConfig(), ckpt, data=other, resume=True)
    fewer = toy_data(n=32)
    with pytest.raises(PplGenError, match=r"^data differ .*shapes \[\[40, 3\], \[40, 1\]\]"):
        run(ToyConfig(), ckpt, data=fewer, resume=True)


def test_resume_refuses_another_kind(tmp_path):
    ckpt = tmp_path / "c.pt"
    run(ToyConfig(), ckpt, stop_after=1)
    task = ToyTask(ToyConfig())
    loop = dataclasses.replace(loop_for(ToyConfig(), ckpt), kind="other", resume=True)
    with pytest.raises(PplGenError, match="holds a 'toy' run, not 'other'"):
        fit(task, loop, single_process("cpu"))


def test_resume_refuses_a_network_of_another_shape(tmp_path):
    ckpt = tmp_path / "c.pt"
    run(ToyConfig(), ckpt, stop_after=1)
    task = ToyTask(ToyConfig())
    task.model = nn.Linear(3, 2)
    with pytest.raises(PplGenError, match="^resume: model does not match the checkpoint"):
        fit(task, loop_for(ToyConfig(), ckpt, resume=True), single_process("cpu"))


def test_reserved_component_names_are_refused():
    task = ToyTask(ToyConfig())
    task.components = lambda: {"history": task.model}
    with pytest.raises(ValueError, match="reserved"):
        fit(task, loop_for(ToyConfig(), None), single_process("cpu"))


def test_nan_loss_stops_with_training_diverged(tmp_path):
    ckpt = tmp_path / "c.pt"
    task = ToyTask(ToyConfig(epochs=3), poison={7: torch.tensor(math.nan)}, ckpt=ckpt)
    with pytest.raises(TrainingDiverged, match=r"non-finite loss \(nan\) at epoch 2, batch 3") as e:
        fit(task, loop_for(ToyConfig(epochs=3), ckpt), single_process("cpu"))
    assert f"the last good checkpoint is kept at {ckpt}" in str(e.value)
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 1  # the epoch-1 checkpoint is intact


def test_finite_explosion_without_checkpoint_says_none_was_written(tmp_path):
    ckpt = tmp_path / "c.pt"
    task = ToyTask(ToyConfig(), poison={2: 1e9}, ckpt=ckpt)
    with pytest.raises(TrainingDiverged, match="loss exploded to 1e\\+09 at epoch 1, batch 3") as e:
        fit(task, loop_for(ToyConfig(), ckpt), single_process("cpu"))
    assert str(e.value).endswith("no checkpoint was written")
    assert not ckpt.exists()
    # with the explosion test off, the same finite value passes
    task = ToyTask(ToyConfig(), poison={2: 1e9})
    result = fit(task, loop_for(ToyConfig(), None, explode_factor=math.inf), single_process("cpu"))
    assert result.epochs == 2


def test_divergence_reference_survives_a_resume(tmp_path):
    ckpt = tmp_path / "c.pt"
    run(ToyConfig(epochs=3), ckpt, stop_after=1)
    state = torch.load(ckpt, weights_only=True)
    first = state["divergence"]["loss"]
    # an explosion relative to the first run's first loss is caught after the resume
    task = ToyTask(ToyConfig(epochs=3), poison={6: 2e4 * max(1.0, first)}, ckpt=ckpt)
    with pytest.raises(TrainingDiverged, match="loss exploded"):
        fit(task, loop_for(ToyConfig(epochs=3), ckpt, resume=True), single_process("cpu"))


def test_checkpoint_loads_weights_only_and_holds_everything(tmp_path):
    ckpt = tmp_path / "run" / "checkpoint.pt"
    task, result = run(ToyConfig(), ckpt, param_store=True)
    state = torch.load(ckpt, weights_only=True)
    assert state["format"] == FORMAT and state["kind"] == "toy"
    assert state["config"] == settings_record(ToyConfig())
    assert state["data_fingerprint"] == data_fingerprint(*toy_data())
    assert state["spec"] == {"inputs": 3}  # meta entries at top level
    for key, value in task.model.state_dict().items():
        assert torch.equal(state["model"][key], value)
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.05
    assert state["epoch"] == 2 and state["iterations"] == 10 and state["world_size"] == 1
    assert torch.equal(state["rng"]["generators"]["order"], task.order.get_state())
    assert len(state["rng_ranks"]) == 1 and set(state["rng_ranks"][0]) >= {"torch", "numpy"}
    assert state["history"]["loss"] == result.history["loss"]
    assert "loss" in state["divergence"] and isinstance(state["param_store"], dict)
    # no stray files: the checkpoint and the per-epoch log; the lock is gone after the run
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["checkpoint.pt", "history.jsonl"]


def test_lock_is_held_during_the_run_and_stale_temps_are_removed(tmp_path):
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.parent.mkdir()
    stale = ckpt.parent / f".checkpoint{TEMP_MARKER}abcd.pt"
    stale.write_bytes(b"half a checkpoint")
    task, _ = run(ToyConfig(), ckpt)
    assert not stale.exists()
    task = ToyTask(ToyConfig(), ckpt=ckpt)
    fit(task, loop_for(ToyConfig(), ckpt, resume=True, stop_after=0), single_process("cpu"))
    task = ToyTask(ToyConfig(epochs=3), ckpt=ckpt)
    fit(task, loop_for(ToyConfig(epochs=3), ckpt, resume=True), single_process("cpu"))
    assert task.lock_seen == [True] * 5
    assert not (ckpt.parent / LOCK_NAME).exists()


@dataclasses.dataclass(frozen=True)
class FakeRank1(DistributedContext):
    """Rank 1 of 2 whose partner is an identical copy of itself (no process group)."""

    rank: int = 1
    world_size: int = 2

    def all_gather_object(self, obj):
        return [obj, obj]

    def all_reduce_sum(self, tensor, what="all_reduce"):
        return tensor.mul_(2)


def test_only_rank_zero_writes(tmp_path):
    ckpt = tmp_path / "run" / "checkpoint.pt"
    task = ToyTask(ToyConfig(), ckpt=ckpt)
    result = fit(task, loop_for(ToyConfig(), ckpt), FakeRank1())
    assert result.epochs == 2
    assert task.written == []  # write_epoch is rank 0's
    assert not ckpt.parent.exists() or list(ckpt.parent.iterdir()) == []  # nor checkpoint, lock
    assert task.lock_seen == [False] * 10
    # the means are all-reduced over both (identical) ranks: unchanged
    single, ref = run(ToyConfig(), None)
    assert result.history["loss"] == pytest.approx(ref.history["loss"], rel=1e-12)


def test_history_contents_and_weighted_means(tmp_path):
    config = ToyConfig(batch_size=16, epochs=2)  # batches of 16, 16, 8
    task = ToyTask(config)
    losses: list[tuple[float, int]] = []
    step = task.step

    def recording(idx, iteration):
        out = step(idx, iteration)
        losses.append((float(out["loss"]), len(idx)))
        return out

    task.step = recording
    result = fit(task, loop_for(config, None), single_process("cpu"))
    h = result.history
    assert set(h) == {"epoch", "loss", "size", "seconds"}
    assert h["epoch"] == [1, 2]
    for e in range(2):
        part = losses[3 * e : 3 * e + 3]
        want = sum(v * n for v, n in part) / sum(n for _, n in part)
        assert h["loss"][e] == pytest.approx(want, rel=1e-12)
        assert want != pytest.approx(sum(v for v, _ in part) / 3, rel=1e-6)  # weights matter
        # weighted mean of the batch sizes: (16*16 + 16*16 + 8*8) / 40
        assert h["size"][e] == pytest.approx(576 / 40)
    assert 0 < h["seconds"][0] <= h["seconds"][1] == pytest.approx(result.seconds)
    assert result.iterations == 6 and result.resumed_from == 0


def test_end_epoch_entries_replace_the_means_and_new_keys_are_padded():
    task = ToyTask(ToyConfig(epochs=3))
    lines: list[str] = []

    def end_epoch(summary):
        entries = {"train": summary.means["loss"], "steps": summary.steps}
        if summary.epoch >= 2:
            entries["val"] = 0.5
        return entries

    task.end_epoch = end_epoch
    task.summary_line = lambda epoch, entries: lines.append(epoch) or f"epoch {epoch}"
    result = fit(task, loop_for(ToyConfig(epochs=3), None), single_process("cpu"))
    assert result.history["val"] == [None, 0.5, 0.5]
    assert result.history["steps"] == [5, 5, 5]
    assert "loss" not in result.history
    assert lines == []  # progress=False: no per-epoch lines


def test_seed_everything_gives_identical_weights():
    a, b = ToyTask(ToyConfig(seed=3)), ToyTask(ToyConfig(seed=3))
    c = ToyTask(ToyConfig(seed=4))
    assert torch.equal(a.model.weight, b.model.weight)
    assert not torch.equal(a.model.weight, c.model.weight)


# ----------------------------------------------------------------------------- timeouts


def test_collective_timeout_default_and_environment(monkeypatch):
    from ppl_gen.core import distributed

    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.collective_timeout() == distributed.DEFAULT_TIMEOUT_S == 60.0
    monkeypatch.setenv("PPL_GEN_COLLECTIVE_TIMEOUT", "12.5")
    assert distributed.collective_timeout() == 12.5
    for bad in ("0", "-3", "soon", "inf", "nan"):
        monkeypatch.setenv("PPL_GEN_COLLECTIVE_TIMEOUT", bad)
        with pytest.raises(PplGenError, match="^PPL_GEN_COLLECTIVE_TIMEOUT must be a positive"):
            distributed.collective_timeout()


GLOO_TIMEOUT = "[../gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 10000ms for recv"


@pytest.mark.parametrize(
    ("rank", "world", "text", "who"),
    [
        (0, 2, GLOO_TIMEOUT, "rank 1"),
        (1, 2, GLOO_TIMEOUT, "rank 0"),
        (2, 4, GLOO_TIMEOUT, "another rank"),
        (2, 4, "Timed out: no answer from rank 3", "rank 3"),
        (0, 4, "Watchdog caught collective operation timeout: ranks 1 and 2", "ranks 1, 2"),
    ],
)
def test_a_timeout_names_the_silent_rank(rank, world, text, who):
    from ppl_gen.core.distributed import DistributedContext, RankFailed

    ctx = DistributedContext(rank=rank, world_size=world, timeout_s=10)
    exc = ctx.failure("epoch means all-reduce", RuntimeError(text))
    assert isinstance(exc, RankFailed)
    message = str(exc)
    assert message.startswith(f"rank {rank} of {world}: epoch means all-reduce failed: ")
    assert f"{who} did not answer within 10 s" in message
    assert "PPL_GEN_COLLECTIVE_TIMEOUT" in message and "[../" not in message


def test_a_crash_is_not_called_a_timeout():
    from ppl_gen.core.distributed import DistributedContext

    ctx = DistributedContext(rank=0, world_size=2)
    crash = RuntimeError("[pair.cc:561] Connection closed by peer [127.0.0.1]:22953")
    message = str(ctx.failure("barrier", crash))
    assert "probably because another rank crashed" in message
    assert "did not answer" not in message and "[Connection closed by peer" in message


# ----------------------------------------------------------------------------- frozen rank

FROZEN_AT = 5  # "mid": rank 1 stops itself before its 6th step (epoch 2: 64 rows, batch 16)
TIMEOUT_S = 10


def frozen_worker(out: Path, when: str) -> int:
    """Under torchrun: ``ppl-gen train vae`` whose rank 1 freezes (SIGSTOP) in the middle of
    training (``when="mid"``) or after the command finished (``"end"``)."""
    import json
    import os
    import signal
    import sys
    import time

    import ppl_gen.__main__ as entry
    from ppl_gen.infer import training

    def freeze() -> None:
        marker = {"pid": os.getpid(), "time": time.time()}
        (out / "frozen.json").write_text(json.dumps(marker))
        os.kill(os.getpid(), signal.SIGSTOP)

    step, command = training.SVITask.step, entry.main

    def freezing_step(self, idx, iteration):
        if self.ctx.rank == 1 and iteration == FROZEN_AT and when == "mid":
            freeze()
        return step(self, idx, iteration)

    def freezing_command():
        code = command()
        if os.environ["RANK"] == "1" and when == "end":
            freeze()
        return code

    training.SVITask.step, entry.main = freezing_step, freezing_command
    sys.argv = [
        "ppl-gen", "train", "vae", "--data", "digits", "--n-train", "64", "--epochs",
        "50" if when == "mid" else "2", "--batch-size", "16", "--hidden", "8",
        "--latent-dim", "2", "--device", "cpu", "--out", str(out / "run"),
    ]  # fmt: skip
    return entry.run()


def _kill_if_alive(pid: int) -> None:
    import os
    import signal

    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return  # gone
    if b"test_engine.py" in cmdline:  # still our frozen worker, not a reused pid
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("when", ["mid", "end"])
def test_a_frozen_rank_ends_the_job_naming_it(tmp_path, when):
    """Rank 1 stops (SIGSTOP); rank 0 fails after the collective timeout naming rank 1, and
    torchrun ends the job (it SIGKILLs the frozen worker 30 s after its SIGTERM)."""
    import json
    import subprocess
    import time

    from torchrun_harness import torchrun

    env = {"PPL_GEN_COLLECTIVE_TIMEOUT": str(TIMEOUT_S), "PYTHONWARNINGS": "ignore"}
    marker = tmp_path / "frozen.json"
    try:
        try:
            proc = torchrun(__file__, str(tmp_path), when, timeout=240, env=env)
        except subprocess.TimeoutExpired:
            pytest.fail("the job with a frozen rank did not end within 240 s")
        ended = time.time()
        assert marker.exists(), f"rank 1 never froze:\n{proc.stderr[-3000:]}"
        frozen = json.loads(marker.read_text())
    finally:  # never leave a stopped process behind
        if marker.exists():
            _kill_if_alive(json.loads(marker.read_text())["pid"])
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors, proc.stderr[-3000:]
    assert errors[0].startswith("error: rank 0 of 2: ")
    assert f"rank 1 did not answer within {TIMEOUT_S} s" in errors[0], errors[0]
    # timeout + torchrun's 30 s grace before it SIGKILLs the frozen worker (~41 s), + slack
    # for a loaded machine
    assert ended - frozen["time"] < TIMEOUT_S + 30 + 15, ended - frozen["time"]
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == (1 if when == "mid" else 2)  # the last good checkpoint


if __name__ == "__main__":  # the worker of test_a_frozen_rank_ends_the_job_naming_it
    import sys

    import ppl_gen.__main__ as entry

    entry._exit(frozen_worker(Path(sys.argv[1]), sys.argv[2]))
