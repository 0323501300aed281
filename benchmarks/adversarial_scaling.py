"""Data-parallel throughput of the adversarial trainers: 1 vs 2 CPU processes (and GPU vs
CPU when CUDA is available).

* ``dann``: :func:`ppl_gen.adaptation.dann_trainer.train_dann`, the ``bn`` network
  (batch norm synchronised over the processes, separate source / target passes), global
  batch 128 (64 source + 64 target images), 3-channel 28x28 images.
* ``dcgan``: :func:`ppl_gen.gan.trainer.train_gan`, DCGAN (ngf = ndf = 64, batch
  norm synchronised), vanilla loss, global batch 64, 1-channel 28x28 images.

Both use random images of MNIST / MNIST-M's shape (throughput depends on shapes, not
content; no data files needed).  Each configuration is a ``torchrun --nproc-per-node P``
job (P = 1 runs the single-process code path, since ``WORLD_SIZE`` is 1) with one torch
thread per process; throughput is global training images per second over the epochs after
the first (DANN counts source and target images).  Rounds alternate 1 and 2 processes; the
script reports medians and the median of the per-round ratios; the machine's load average
is recorded before and after (it is shared with other jobs).

With CUDA available it also measures, in this process, both trainers on ``cuda`` (fp32 and
bf16) vs ``cpu`` (all cores); without CUDA it prints a skip line.

``.venv/bin/python benchmarks/adversarial_scaling.py [--rounds 3] [--epochs 3]``
``[--models dann,dcgan]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import ppl_gen  # noqa: F401  (sets MKL_ENABLE_INSTRUCTIONS before torch loads)

# isort: split
import torch
import torchrun_launch
from plain_vae import RESULTS, environment, write_json

DANN_BATCH, DANN_STEPS = 128, 16
GAN_BATCH, GAN_STEPS = 64, 16


def dann_run(epochs: int, device: str, precision: str = "fp32") -> dict:
    """Train DANN on random images; global images/s after the first epoch."""
    from ppl_gen.adaptation.dann_trainer import DANNConfig, DomainData, train_dann

    g = torch.Generator().manual_seed(0)
    n = DANN_BATCH // 2 * DANN_STEPS
    xs, xt = torch.rand(n, 3, 28, 28, generator=g), torch.rand(n, 3, 28, 28, generator=g)
    ys = torch.randint(0, 10, (n,), generator=g)
    config = DANNConfig(
        arch="bn", epochs=epochs, batch_size=DANN_BATCH, device=device, progress=False,
        precision=precision,
    )  # fmt: skip
    result = train_dann(
        DomainData("src", xs, ys, xs, ys), DomainData("tgt", xt, None, xt, ys), config
    )
    sec = result.history["seconds"]
    return {
        "images_per_s": (epochs - 1) * DANN_STEPS * DANN_BATCH / (sec[-1] - sec[0]),
        "first_epoch_s": sec[0],
        "final_label_loss": result.history["label_loss"][-1],
    }


def dcgan_run(epochs: int, device: str, precision: str = "fp32") -> dict:
    """Train DCGAN on random images; global images/s after the first epoch."""
    from ppl_gen.data.images import ImageData
    from ppl_gen.gan.trainer import GANConfig, train_gan

    g = torch.Generator().manual_seed(0)
    images = torch.rand(GAN_BATCH * GAN_STEPS, 1, 28, 28, generator=g)
    config = GANConfig(
        model="dcgan", epochs=epochs, batch_size=GAN_BATCH, device=device, progress=False,
        check_collapse=False, precision=precision,
    )  # fmt: skip
    result = train_gan(ImageData("random", images, None, None), config)
    sec = result.history["seconds"]
    return {
        "images_per_s": (epochs - 1) * GAN_STEPS * GAN_BATCH / (sec[-1] - sec[0]),
        "first_epoch_s": sec[0],
        "final_d_loss": result.history["d_loss"][-1],
    }


RUNS = {"dann": dann_run, "dcgan": dcgan_run}


def worker(args) -> None:
    """One torchrun worker: train; rank 0 writes the figures to ``args.worker_out``."""
    from ppl_gen.core.distributed import init_from_env, teardown

    torch.set_num_threads(1)
    ctx = init_from_env("cpu")
    res = RUNS[args.model](args.epochs, "cpu")
    if ctx.is_main:
        Path(args.worker_out).write_text(json.dumps({**res, "processes": ctx.world_size}))
    teardown()


def launch(model: str, nproc: int, args) -> dict:
    worker_args = ["--model", model, "--epochs", str(args.epochs)]
    return torchrun_launch.launch(__file__, nproc, worker_args, f"{model}: ")


def gpu_part(models: list[str], epochs: int) -> dict:
    if not torch.cuda.is_available():
        print("GPU: skipped (torch.cuda.is_available() is False on this machine)")
        return {"skipped": "no CUDA device"}
    from ppl_gen.core.device import describe

    torch.set_num_threads(os.cpu_count() or 1)
    out: dict = {"device": describe(torch.device("cuda")), "cpu_threads": torch.get_num_threads()}
    for model in models:
        cpu = RUNS[model](epochs, "cpu")["images_per_s"]
        gpu = RUNS[model](epochs, "cuda")["images_per_s"]
        bf16 = RUNS[model](epochs, "cuda", "bf16")["images_per_s"]
        out[model] = {
            "cpu_images_per_s": cpu,
            "gpu_images_per_s": gpu,
            "gpu_bf16_images_per_s": bf16,
            "gpu_over_cpu": gpu / cpu,
        }
        print(
            f"GPU {out['device']}: {model} {gpu:,.0f} images/s (bf16 {bf16:,.0f}) vs CPU "
            f"{cpu:,.0f} images/s ({out['cpu_threads']} threads): {gpu / cpu:.1f}x"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="per run; the first is warm-up")
    parser.add_argument("--models", default="dann,dcgan", help="comma-separated: dann, dcgan")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch of each run is warm-up)")
    if args.worker:
        worker(args)
        return
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(RUNS))
    if unknown:
        sys.exit(f"--models: unknown {', '.join(unknown)} (known: {', '.join(RUNS)})")
    load_before = torchrun_launch.load_average()
    cpu: dict = {}
    for model in models:
        runs: dict[int, list[dict]] = {1: [], 2: []}
        ratios = []
        for r in range(args.rounds):
            for p in (1, 2) if r % 2 == 0 else (2, 1):
                runs[p].append(launch(model, p, args))
                print(
                    f"{model} round {r + 1}: {p} process(es): "
                    f"{runs[p][-1]['images_per_s']:,.0f} images/s"
                )
            ratios.append(runs[2][-1]["images_per_s"] / runs[1][-1]["images_per_s"])
        one = statistics.median(x["images_per_s"] for x in runs[1])
        two = statistics.median(x["images_per_s"] for x in runs[2])
        ratio = statistics.median(ratios)
        print(
            f"{model}, CPU, 1 thread per process: 1 process {one:,.0f} images/s, 2 processes "
            f"{two:,.0f} images/s; speed-up {ratio:.2f}x (median of {args.rounds} rounds; "
            "ideal 2.00)"
        )
        cpu[model] = {
            "images_per_s_1proc": one,
            "images_per_s_2proc": two,
            "speedup_2_over_1": ratio,
            "per_round_ratios": ratios,
            "runs": runs,
        }
    load_after = torchrun_launch.load_average()
    print(f"load average before {load_before}, after {load_after} ({os.cpu_count()} cores)")
    payload = {
        "models": models,
        "dann": {"batch_global": DANN_BATCH, "steps_per_epoch": DANN_STEPS, "arch": "bn"},
        "dcgan": {"batch_global": GAN_BATCH, "steps_per_epoch": GAN_STEPS, "ngf_ndf": 64},
        "epochs_per_run": args.epochs,
        "cpu": cpu,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "gpu": gpu_part(models, args.epochs),
        "environment": environment(),
    }
    write_json(RESULTS / "adversarial_scaling.json", payload)


if __name__ == "__main__":
    main()
