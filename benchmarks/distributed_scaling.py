"""Data-parallel scaling of VAE SVI training: 1 vs 2 processes on CPU (and GPU vs CPU).

784-400-20 ReLU MLP VAE, Bernoulli decoder, amortised guide, analytic KL, global batch 128,
Adam 1e-3, dynamic binarisation, MNIST (the 14,262-image training subset in
``../shared/data/mnist``; ``--synthetic`` for random grey levels of the same size).  Each
configuration is a ``torchrun --nproc-per-node P`` job (P = 1 runs the single-process code
path, since ``WORLD_SIZE`` is 1) with one torch thread per process; throughput is global
training images per second over the epochs after the first (the first pays the start-up).
Rounds alternate 1 and 2 processes; the script reports medians and the median of the
per-round ratios (the machine is shared: the load average is recorded before and after).

With CUDA available it also measures, in this process, the same training on ``cuda`` vs
``cpu`` (images/s) and the IWAE-5000 evaluation time of the full MNIST test set on the GPU.
Without CUDA it says so and skips that part.  ``--gpu-only`` runs only that part (an error
without CUDA), with ``--iwae-k`` and ``--n-test`` to shrink the evaluation, and writes
``distributed_scaling_gpu.json`` by default.  (DCGAN and DANN figures, 1 vs 2 processes
and GPU vs CPU: ``benchmarks/adversarial_scaling.py``.)

``.venv/bin/python benchmarks/distributed_scaling.py [--rounds 3] [--epochs 3] [--synthetic]
[--gpu-only [--iwae-k K] [--n-test N]]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import ppl_gen  # noqa: F401  (sets MKL_ENABLE_INSTRUCTIONS before torch loads)

# isort: split
import pyro
import torch
import torchrun_launch
from plain_vae import RESULTS, add_data_args, environment, load_mnist, ppl_gen_modules, write_json

from ppl_gen.infer.training import TrainConfig, train

BATCH = 128


def data_for(args):
    if args.synthetic:
        from vae_throughput import synthetic_data

        return synthetic_data(14_262)
    return load_mnist(args.data_root)


def train_once(data, epochs: int, device: str, seed: int = 0) -> dict:
    """Train the VAE; returns throughput after the first epoch (global images/s)."""
    torch.manual_seed(seed)
    pyro.clear_param_store()
    model, guide = ppl_gen_modules()
    config = TrainConfig(
        epochs=epochs, batch_size=BATCH, lr=1e-3, seed=seed, val_every=0, progress=False,
        device=device,
    )  # fmt: skip
    result = train(model, guide, data, config)
    sec = result.history["seconds"]
    n = data.train.shape[0]
    return {
        "images_per_s": (epochs - 1) * n / (sec[-1] - sec[0]),
        "first_epoch_s": sec[0],
        "train_elbo": result.history["train_elbo"][-1],
        "model": model,
        "guide": guide,
    }


def worker(args) -> None:
    """One torchrun worker: train, rank 0 writes the figures to ``args.worker_out``."""
    from ppl_gen.core.distributed import init_from_env, teardown
    from ppl_gen.infer import training

    torch.set_num_threads(1)
    ctx = init_from_env("cpu")
    sync = training._sync_gradients
    spent = {"seconds": 0.0, "calls": 0}

    def timed_sync(*a, **k):  # the gradient all-reduce (incl. waiting for the other rank)
        t0 = time.perf_counter()
        try:
            return sync(*a, **k)
        finally:
            spent["seconds"] += time.perf_counter() - t0
            spent["calls"] += 1

    training._sync_gradients = timed_sync
    res = train_once(data_for(args), args.epochs, "cpu")
    if ctx.is_main:
        payload = {k: v for k, v in res.items() if k not in ("model", "guide")}
        payload["allreduce_ms_per_step"] = 1e3 * spent["seconds"] / max(spent["calls"], 1)
        Path(args.worker_out).write_text(json.dumps({**payload, "processes": ctx.world_size}))
    teardown()


def launch(nproc: int, args) -> dict:
    worker_args = ["--epochs", str(args.epochs), "--data-root", str(args.data_root)]
    worker_args += ["--synthetic"] if args.synthetic else []
    return torchrun_launch.launch(__file__, nproc, worker_args, "")


def gpu_part(args, data) -> dict:
    if not torch.cuda.is_available():
        print("GPU: skipped (torch.cuda.is_available() is False on this machine)")
        return {"skipped": "no CUDA device"}
    from ppl_gen.core.device import describe
    from ppl_gen.infer.bounds import evaluate_bounds

    torch.set_num_threads(os.cpu_count() or 1)
    cpu = train_once(data, args.epochs, "cpu")
    gpu = train_once(data, args.epochs, "cuda")
    x = data.test[: args.n_test].to("cuda")
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    bounds = evaluate_bounds(gpu["model"], gpu["guide"], x, k=args.iwae_k)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    out = {
        "device": describe(torch.device("cuda")),
        "cpu_threads": torch.get_num_threads(),
        "vae_cpu_images_per_s": cpu["images_per_s"],
        "vae_gpu_images_per_s": gpu["images_per_s"],
        "vae_gpu_over_cpu": gpu["images_per_s"] / cpu["images_per_s"],
        "iwae_k": args.iwae_k,
        "iwae_test_seconds": seconds,
        "iwae_test_images": int(x.shape[0]),
        "iwae_mean": bounds.iwae_mean,
        "dcgan_dann": "see benchmarks/adversarial_scaling.py",
    }
    print(
        f"GPU {out['device']}: VAE {out['vae_gpu_images_per_s']:,.0f} vs CPU "
        f"{out['vae_cpu_images_per_s']:,.0f} images/s ({out['vae_gpu_over_cpu']:.1f}x); "
        f"IWAE-{args.iwae_k} of {out['iwae_test_images']} test images: {seconds:.1f} s"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(parser)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="per run; the first is warm-up")
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--gpu-only", action="store_true", help="only the CUDA vs CPU part")
    parser.add_argument("--iwae-k", type=int, default=5000, help="K of the GPU IWAE timing")
    parser.add_argument("--n-test", type=int, default=None, help="GPU IWAE: first N test images")
    parser.add_argument("--out", type=Path, default=None, help="results file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch of each run is warm-up)")
    if args.worker:
        worker(args)
        return
    data = data_for(args)  # fail early when MNIST is absent
    if args.gpu_only:
        if not torch.cuda.is_available():
            parser.error("--gpu-only: torch.cuda.is_available() is False on this machine")
        payload = {"dataset": data.name, "gpu": gpu_part(args, data), "environment": environment()}
        write_json(args.out or RESULTS / "distributed_scaling_gpu.json", payload)
        return
    load_before = torchrun_launch.load_average()
    runs: dict[int, list[dict]] = {1: [], 2: []}
    ratios = []
    for r in range(args.rounds):
        order = (1, 2) if r % 2 == 0 else (2, 1)
        for p in order:
            runs[p].append(launch(p, args))
            last = runs[p][-1]
            sync = f" (all-reduce {last['allreduce_ms_per_step']:.1f} ms/step)" if p > 1 else ""
            print(f"round {r + 1}: {p} process(es): {last['images_per_s']:,.0f} images/s{sync}")
        ratios.append(runs[2][-1]["images_per_s"] / runs[1][-1]["images_per_s"])
    load_after = torchrun_launch.load_average()
    one = statistics.median(x["images_per_s"] for x in runs[1])
    two = statistics.median(x["images_per_s"] for x in runs[2])
    ratio = statistics.median(ratios)
    steps = -(-data.train.shape[0] // BATCH)
    sync_ms = statistics.median(x["allreduce_ms_per_step"] for x in runs[2])
    step_ms = 1e3 * data.train.shape[0] / two / steps
    print(
        f"2 processes: gradient all-reduce {sync_ms:.1f} ms of a {step_ms:.1f} ms step "
        "(includes waiting for the slower rank)"
    )
    print(
        f"CPU, 1 thread per process: 1 process {one:,.0f} images/s, 2 processes {two:,.0f} "
        f"images/s; speed-up {ratio:.2f}x (median of {args.rounds} rounds; ideal 2.00); "
        f"load average before {load_before}, after {load_after}"
    )
    payload = {
        "dataset": data.name,
        "n_train": int(data.train.shape[0]),
        "batch_size_global": BATCH,
        "epochs_per_run": args.epochs,
        "cpu": {
            "images_per_s_1proc": one,
            "images_per_s_2proc": two,
            "speedup_2_over_1": ratio,
            "per_round_ratios": ratios,
            "allreduce_ms_per_step_2proc": sync_ms,
            "step_ms_2proc": step_ms,
            "runs": runs,
        },
        "load_average_before": load_before,
        "load_average_after": load_after,
        "gpu": gpu_part(args, data),
        "environment": environment(),
    }
    write_json(args.out or RESULTS / "distributed_scaling.json", payload)


if __name__ == "__main__":
    main()
