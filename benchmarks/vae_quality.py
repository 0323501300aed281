"""Quality target: ppl_gen's VAE matches a plain-PyTorch VAE trained the same way.

MNIST, 784-400-20 ReLU MLP, Bernoulli likelihood, dynamic binarisation of the training
images, batch 128, Adam 1e-3, ``--epochs`` (default 100), same seed and same initial
weights for both:

* ``ppl_gen`` -- ``ppl_gen.models.VAE`` + ``AmortisedGaussianGuide`` trained by
  ``ppl_gen.infer.training.train(TrainConfig(elbo="analytic-kl"))``;
* ``plain``   -- :class:`plain_vae.PlainVAE` trained by :func:`plain_vae.train_plain` (no Pyro).

Both are then evaluated with ``ppl_gen.infer.bounds.evaluate_bounds`` (the plain weights are
loaded into ppl_gen modules of identical layout) on the official 10,000 MNIST test images,
binarised once (``load_dataset(..., binarize="dynamic")`` fixes the test images): test
IWAE-K (K = 5000 by default) and test ELBO, nats per image, with standard errors, and the
difference ppl_gen - plain with its paired standard error.  Target: ``|IWAE difference| <= 1``
nat.

``.venv/bin/python benchmarks/vae_quality.py [--quick] [--epochs E] [--k K] [--n-test N]``
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import ppl_gen  # noqa: F401  (sets MKL_ENABLE_INSTRUCTIONS before torch loads)

# isort: split
import torch
from plain_vae import (
    RESULTS,
    PlainVAE,
    add_data_args,
    copy_from_ppl_gen,
    copy_into_ppl_gen,
    environment,
    load_mnist,
    ppl_gen_modules,
    train_plain,
    write_json,
)


def evaluate(model, guide, x: torch.Tensor, k: int, seed: int, chunk: int):
    import pyro

    from ppl_gen.infer.bounds import evaluate_bounds

    pyro.set_rng_seed(seed)
    t0 = time.perf_counter()
    bounds = evaluate_bounds(model, guide, x, k=k, max_samples_per_chunk=chunk)
    return bounds, time.perf_counter() - t0


def paired_se(a: torch.Tensor, b: torch.Tensor) -> float:
    d = (a - b).double()
    return float(d.std() / math.sqrt(d.numel())) if d.numel() > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(parser)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--k", type=int, default=5000, help="importance samples K")
    parser.add_argument("--n-test", type=int, default=None, help="test images (default all)")
    parser.add_argument("--n-train", type=int, default=None, help="training rows (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=50_000, help="max_samples_per_chunk")
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="also keep the trained weights here (ppl_gen.pt: a ppl_gen checkpoint, usable "
        "with iwae_eval.py --checkpoint; plain.pt: the plain VAE's state_dict)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads while training (default 1: with two threads the "
        "small per-step kernels stall on OpenMP barriers whenever another process competes "
        "for the cores; 0: torch's default)",
    )
    parser.add_argument(
        "--eval-threads", type=int, default=0, help="threads while evaluating (0: default)"
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        help="show train()'s progress bar and per-epoch lines (the bar redraws every batch)",
    )
    parser.add_argument("--quick", action="store_true", help="2 epochs, K=500, 1,000 images")
    parser.add_argument("--out", type=Path, default=RESULTS / "vae_quality.json")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.k, args.n_test = 2, 500, args.n_test or 1000

    from ppl_gen.infer.training import TrainConfig, train

    data = load_mnist(args.data_root)
    if args.n_train:
        from dataclasses import replace

        data = replace(data, train=data.train[: args.n_train])
    x_test = data.test[: args.n_test] if args.n_test else data.test
    print(
        f"MNIST: {data.train.shape[0]} training rows (dynamic binarisation), "
        f"{x_test.shape[0]} test images (fixed binarisation); {args.epochs} epochs, "
        f"IWAE-{args.k}",
        flush=True,
    )

    default_threads = torch.get_num_threads()
    train_threads = args.threads or default_threads
    eval_threads = args.eval_threads or default_threads
    torch.set_num_threads(train_threads)
    torch.manual_seed(args.seed)
    model, guide = ppl_gen_modules()
    plain = PlainVAE()
    copy_from_ppl_gen(plain, model, guide)  # identical initial weights

    ckpt = None
    if args.checkpoint_dir:
        args.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ckpt = str(args.checkpoint_dir / "ppl_gen.pt")
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=128,
        lr=1e-3,
        elbo="analytic-kl",
        seed=args.seed,
        val_every=0,
        checkpoint=ckpt,
        progress=args.progress,
        device="cpu",
    )
    print("training ppl_gen ...", flush=True)
    t0 = time.perf_counter()
    res_ppl = train(model, guide, data, config)
    wall_ppl = time.perf_counter() - t0
    print(
        f"ppl_gen: {res_ppl.seconds:.0f} s training, final train ELBO "
        f"{res_ppl.history['train_elbo'][-1]:.3f}",
        flush=True,
    )

    print("training plain ...", flush=True)
    t0 = time.perf_counter()
    res_plain = train_plain(
        plain,
        data.train,
        epochs=args.epochs,
        batch_size=128,
        lr=1e-3,
        seed=args.seed,
        progress=args.progress,
    )
    wall_plain = time.perf_counter() - t0
    print(
        f"plain: {res_plain.seconds:.0f} s training, final train ELBO "
        f"{res_plain.history['train_elbo'][-1]:.3f}",
        flush=True,
    )
    if args.checkpoint_dir:
        torch.save(plain.state_dict(), args.checkpoint_dir / "plain.pt")

    plain_model, plain_guide = ppl_gen_modules()
    copy_into_ppl_gen(plain, plain_model, plain_guide)
    for m in (model, guide, plain_model, plain_guide):
        m.eval()
    torch.set_num_threads(eval_threads)
    print(f"evaluating IWAE-{args.k} on {x_test.shape[0]} test images ...", flush=True)
    b_ppl, s_ppl = evaluate(model, guide, x_test, args.k, args.seed, args.chunk)
    print(f"ppl_gen evaluated in {s_ppl:.0f} s", flush=True)
    b_plain, s_plain = evaluate(plain_model, plain_guide, x_test, args.k, args.seed, args.chunk)
    print(f"plain evaluated in {s_plain:.0f} s", flush=True)

    d_iwae = b_ppl.iwae_mean - b_plain.iwae_mean
    d_elbo = b_ppl.elbo_mean - b_plain.elbo_mean
    se_iwae = paired_se(b_ppl.iwae, b_plain.iwae)
    se_elbo = paired_se(b_ppl.elbo, b_plain.elbo)
    print()
    print(f"{'':<10}{'IWAE-' + str(args.k):>12}{'+-se':>7}{'ELBO':>11}{'+-se':>7}", end="")
    print(f"{'train ELBO':>12}{'train s':>9}{'eval s':>8}")
    for name, b, res, secs in (
        ("ppl_gen", b_ppl, res_ppl, s_ppl),
        ("plain", b_plain, res_plain, s_plain),
    ):
        print(
            f"{name:<10}{b.iwae_mean:>12.2f}{b.iwae_se:>7.2f}{b.elbo_mean:>11.2f}"
            f"{b.elbo_se:>7.2f}{res.history['train_elbo'][-1]:>12.2f}{res.seconds:>9.0f}"
            f"{secs:>8.0f}"
        )
    print(
        f"{'diff':<10}{d_iwae:>12.2f}{se_iwae:>7.2f}{d_elbo:>11.2f}{se_elbo:>7.2f}"
        "   (ppl_gen - plain, paired se)"
    )
    full = args.epochs >= 100 and args.k >= 5000 and x_test.shape[0] == data.test.shape[0]
    verdict = "PASS" if abs(d_iwae) <= 1.0 else "FAIL"
    print(f"\n|IWAE difference| = {abs(d_iwae):.2f} nats (target <= 1): {verdict}", end="")
    print("" if full else "  [reduced settings, not the target run]")

    def rounded(values):
        return [round(v, 3) for v in values]

    write_json(
        args.out,
        {
            "benchmark": "vae_quality",
            "description": "MNIST 784-400-20 VAE, Bernoulli, dynamic binarisation, batch 128, "
            "Adam 1e-3; test bounds by ppl_gen.infer.bounds.evaluate_bounds on fixed-binarised "
            "official test images (nats per image)",
            "epochs": args.epochs,
            "k": args.k,
            "n_train": int(data.train.shape[0]),
            "n_test": int(x_test.shape[0]),
            "seed": args.seed,
            "max_samples_per_chunk": args.chunk,
            "train_threads": train_threads,
            "eval_threads": eval_threads,
            "full_settings": full,
            "ppl_gen": {
                **b_ppl.summary(),
                "train_seconds": res_ppl.seconds,
                "train_wall_seconds": wall_ppl,
                "eval_seconds": s_ppl,
                "train_elbo_history": rounded(res_ppl.history["train_elbo"]),
            },
            "plain": {
                **b_plain.summary(),
                "train_seconds": res_plain.seconds,
                "train_wall_seconds": wall_plain,
                "eval_seconds": s_plain,
                "train_elbo_history": rounded(res_plain.history["train_elbo"]),
            },
            "difference_ppl_gen_minus_plain": {
                "iwae": d_iwae,
                "iwae_paired_se": se_iwae,
                "elbo": d_elbo,
                "elbo_paired_se": se_elbo,
            },
            "target_abs_iwae_difference": 1.0,
            "pass": abs(d_iwae) <= 1.0,
            "environment": environment(),
        },
    )


if __name__ == "__main__":
    main()
