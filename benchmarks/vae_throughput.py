"""Training throughput of ppl_gen's Pyro VAE against a plain-PyTorch loop (CPU or CUDA).

784-400-20 ReLU MLP VAE, Bernoulli decoder, batch 128, Adam 1e-3, dynamic binarisation.
Variants, each timed over the same number of epochs on the same data:

* ``plain``             -- :func:`plain_vae.train_plain`, the no-Pyro yardstick;
* ``ppl_gen``           -- ``ppl_gen.infer.training.train`` with ``TrainConfig(elbo="analytic-kl")``
                           (the default; the target is ``ppl_gen / plain <= 1.15``);
* ``ppl_gen-jit``       -- the same with ``elbo="jit-analytic-kl"`` (compiled per call);
* ``ppl_gen-trace``     -- the same with ``elbo="trace"`` (Monte Carlo KL);
* ``pyro-textbook``     -- Pyro's tutorial VAE: ``pyro.module`` registration,
                           ``SVI(model, guide, pyro.optim.Adam, Trace_ELBO())``,
                           ``svi.step`` per minibatch, Pyro's default validation (on);
* ``pyro-textbook-noval`` -- the same inside ``pyro.validation_enabled(False)``.

Timed: the epoch loops only (``TrainResult.seconds`` for ``train``; the same span for the
others), plus the wall time of the whole call (setup included).  Variants are interleaved
(round r runs them in an order rotated by r) and the script reports medians over rounds
and the median of per-round ratios to ``plain`` (the machine is shared, so absolute times
are noisy; ratios measured side by side are the figure to read).  ``--threads 1`` avoids
the OpenMP barrier stalls that two threads suffer when another process competes for the
two cores (a step then takes tens of milliseconds instead of a few).

``--device cuda`` runs every variant on the GPU (data, networks and the binarisation
stream on the device; the per-step ``float(loss)`` of every loop synchronises it, so the
loop times are complete); the results go to ``vae_throughput_cuda.json`` by default.

``.venv/bin/python benchmarks/vae_throughput.py [--quick] [--synthetic] [--device cuda]``
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from dataclasses import replace
from pathlib import Path

import ppl_gen  # noqa: F401  (sets MKL_ENABLE_INSTRUCTIONS before torch loads)

# isort: split
import pyro
import pyro.distributions as dist
import torch
from plain_vae import (
    RESULTS,
    PlainVAE,
    add_data_args,
    copy_from_ppl_gen,
    environment,
    load_mnist,
    ppl_gen_modules,
    train_plain,
    write_json,
)
from pyro.infer import SVI, Trace_ELBO

from ppl_gen.core.device import resolve_device
from ppl_gen.data.datasets import DataSplits, binarize_batch, iterate_minibatches
from ppl_gen.infer.training import TrainConfig, train

# The JIT ELBO re-traces on every train() call; its tracer warnings are not our subject.
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
warnings.filterwarnings("ignore", message=".*torch.jit.trace.* is deprecated")

BATCH = 128
VARIANTS = (
    "plain",
    "ppl_gen",
    "ppl_gen-jit",
    "ppl_gen-trace",
    "pyro-textbook",
    "pyro-textbook-noval",
)
PPL_GEN_ELBO = {
    "ppl_gen": "analytic-kl",
    "ppl_gen-jit": "jit-analytic-kl",
    "ppl_gen-trace": "trace",
}


def synthetic_data(n_train: int = 54_000, seed: int = 0) -> DataSplits:
    """Random grey levels of MNIST's size (binarised dynamically like MNIST)."""
    g = torch.Generator().manual_seed(seed)
    train_x = torch.rand(n_train, 784, generator=g)
    test = torch.bernoulli(torch.rand(1000, 784, generator=g), generator=g)
    return DataSplits(
        name="synthetic",
        train=train_x,
        val=test[:0],
        test=test,
        train_labels=None,
        val_labels=None,
        test_labels=None,
        image_shape=(28, 28),
        binarize="dynamic",
    )


def fresh_modules(seed: int, device: torch.device | str = "cpu"):
    torch.manual_seed(seed)
    model, guide = ppl_gen_modules()
    plain = PlainVAE()
    copy_from_ppl_gen(plain, model, guide)
    return model.to(device), guide.to(device), plain.to(device)


def run_plain(data: DataSplits, epochs: int, seed: int, device) -> tuple[float, float, int]:
    _, _, plain = fresh_modules(seed, device)
    t0 = time.perf_counter()
    res = train_plain(plain, data.train, epochs=epochs, batch_size=BATCH, seed=seed)
    return res.seconds, time.perf_counter() - t0, data.train.shape[0] * epochs


def run_ppl_gen(
    data: DataSplits, epochs: int, seed: int, elbo: str, device
) -> tuple[float, float, int]:
    model, guide, _ = fresh_modules(seed, device)
    pyro.clear_param_store()
    config = TrainConfig(
        epochs=epochs,
        batch_size=BATCH,
        lr=1e-3,
        elbo=elbo,
        seed=seed,
        val_every=0,
        progress=False,
        device=str(device),
    )
    t0 = time.perf_counter()
    res = train(model, guide, data, config)
    wall = time.perf_counter() - t0
    n = data.train.shape[0]
    per_epoch = n - n % BATCH if elbo.startswith("jit") else n
    assert res.iterations == epochs * -(-per_epoch // BATCH), res.iterations
    images = per_epoch * epochs
    return res.seconds, wall, images


def run_textbook(
    data: DataSplits, epochs: int, seed: int, validate: bool, device
) -> tuple[float, float, int]:
    """Pyro's VAE tutorial, with this benchmark's networks, data order and binarisation."""
    model_m, guide_m, plain = fresh_modules(seed, device)
    encoder, decoder = plain.encoder, plain.decoder
    pyro.clear_param_store()

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            zeros = x.new_zeros(x.shape[0], 20)
            z = pyro.sample("latent", dist.Normal(zeros, torch.ones_like(zeros)).to_event(1))
            pyro.sample("obs", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = encoder(x)
            pyro.sample("latent", dist.Normal(loc, scale).to_event(1))

    t0 = time.perf_counter()
    pyro.set_rng_seed(seed)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), loss=Trace_ELBO())
    shuffle = torch.Generator().manual_seed(seed)
    binarize = torch.Generator(device=device).manual_seed(seed + 1)
    x = data.train.to(device)
    n = x.shape[0]
    loop = 0.0
    with pyro.validation_enabled(validate):
        for _ in range(epochs):
            t1 = time.perf_counter()
            for idx in iterate_minibatches(n, BATCH, generator=shuffle, device=device):
                svi.step(binarize_batch(x[idx], binarize))  # returns a float: synchronises
            loop += time.perf_counter() - t1
    return loop, time.perf_counter() - t0, n * epochs


def run_variant(name: str, data: DataSplits, epochs: int, seed: int, device):
    if name == "plain":
        return run_plain(data, epochs, seed, device)
    if name in PPL_GEN_ELBO:
        return run_ppl_gen(data, epochs, seed, PPL_GEN_ELBO[name], device)
    if name == "pyro-textbook":
        return run_textbook(data, epochs, seed, True, device)
    if name == "pyro-textbook-noval":
        return run_textbook(data, epochs, seed, False, device)
    raise ValueError(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(parser)
    parser.add_argument("--synthetic", action="store_true", help="random data of MNIST size")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per timed run")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved repetitions")
    parser.add_argument("--n-train", type=int, default=None, help="use only this many rows")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--quick", action="store_true", help="5,000 rows, 2 rounds")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results file (default results/vae_throughput.json, _cuda.json on a GPU)",
    )
    args = parser.parse_args()
    try:
        device = resolve_device(args.device)
    except ValueError as exc:  # PplGenError: no such device here
        parser.error(f"--device: {exc}")
    if args.out is None:
        suffix = "" if device.type == "cpu" else f"_{device.type}"
        args.out = RESULTS / f"vae_throughput{suffix}.json"
    if args.quick:
        args.n_train = args.n_train or 5000
        args.rounds = min(args.rounds, 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or "plain" not in variants:
        parser.error(f"--variants: must include plain, choose from {', '.join(VARIANTS)}")

    data = synthetic_data() if args.synthetic else load_mnist(args.data_root)
    if args.n_train:
        data = replace(data, train=data.train[: args.n_train])
    n = data.train.shape[0]
    print(
        f"data: {data.name}, {n} training rows, batch {BATCH}, {args.epochs} epoch(s) per run, "
        f"{args.rounds} rounds, {torch.get_num_threads()} threads, device {device}",
        flush=True,
    )

    warm = replace(data, train=data.train[: 20 * BATCH])
    for name in variants:  # warm-up: imports, allocator, first-call costs
        run_variant(name, warm, 1, args.seed, device)

    loop = {v: [] for v in variants}
    wall = {v: [] for v in variants}
    images = {}
    for r in range(args.rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for name in order:
            seconds, call, imgs = run_variant(name, data, args.epochs, args.seed, device)
            loop[name].append(seconds)
            wall[name].append(call)
            images[name] = imgs
        print(
            f"round {r + 1}/{args.rounds}: "
            + ", ".join(f"{v} {loop[v][-1]:.2f}s" for v in variants),
            flush=True,
        )

    rows = {}
    for name in variants:
        ratios = [a / b for a, b in zip(loop[name], loop["plain"], strict=True)]
        wall_ratios = [a / b for a, b in zip(wall[name], wall["plain"], strict=True)]
        med = statistics.median(loop[name])
        best = min(loop[name])
        rows[name] = {
            "loop_seconds": loop[name],
            "call_seconds": wall[name],
            "median_loop_seconds": med,
            "images_per_run": images[name],
            "images_per_second": images[name] / med,
            "ratio_to_plain": statistics.median(ratios),
            "min_loop_seconds": best,
            "ratio_of_minima": best / min(loop["plain"]),
            "ratio_to_plain_per_round": ratios,
            "call_ratio_to_plain": statistics.median(wall_ratios),
        }

    print()
    print(
        f"{'variant':<21}{'median s':>9}{'images/s':>10}{'x plain':>9}{'min s':>8}"
        f"{'x plain':>9}{'call x':>8}"
    )
    for name, row in rows.items():
        print(
            f"{name:<21}{row['median_loop_seconds']:>9.3f}{row['images_per_second']:>10.0f}"
            f"{row['ratio_to_plain']:>9.3f}{row['min_loop_seconds']:>8.3f}"
            f"{row['ratio_of_minima']:>9.3f}{row['call_ratio_to_plain']:>8.3f}"
        )
    print(
        "(x plain: median over rounds of variant/plain in the same round; min s and its x plain:"
        " fastest run of each; call x: whole train() call incl. setup, median ratio)"
    )
    if "ppl_gen" in rows:
        ratio = rows["ppl_gen"]["ratio_to_plain"]
        verdict = "PASS" if ratio <= 1.15 else "FAIL"
        print(f"\nppl_gen (analytic-kl) / plain = {ratio:.3f} (target <= 1.15): {verdict}")

    write_json(
        args.out,
        {
            "benchmark": "vae_throughput",
            "description": "training time per epoch loop, 784-400-20 VAE, batch 128; "
            "ratio_to_plain = median over rounds of (variant / plain) in the same round; "
            "ratio_of_minima = fastest variant run / fastest plain run",
            "data": data.name,
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "n_train": n,
            "batch_size": BATCH,
            "epochs_per_run": args.epochs,
            "rounds": args.rounds,
            "threads": torch.get_num_threads(),
            "target_ratio_ppl_gen": 1.15,
            "variants": rows,
            "environment": environment(),
        },
    )


if __name__ == "__main__":
    main()
