"""IWAE-50 training throughput: ppl_gen against a plain-PyTorch IWAE loop, same networks.

784-400-20 ReLU MLP VAE (the layout of ``plain_vae.PlainVAE``), Bernoulli decoder,
standard-normal prior, batch 100, Adam 1e-3, dynamic binarisation, K = 50 samples per
datapoint (Burda et al. 2016, eq. 8; reparameterised gradient):

* ``plain``   -- a hand-written loop: encoder, ``loc + scale * eps`` for ``(K, batch, Z)``
  noise, decoder, log-weights, ``logsumexp - log K``, ``-(N / B) sum``, backward, Adam;
* ``ppl_gen`` -- ``ppl_gen.train(model, guide, data, TrainConfig(objective="iwae", k=50))``
  (the engine loop with :class:`ppl_gen.infer.objectives.ImportanceWeightedObjective`),
  validation off.

Both start from the same weights.  Timed: the epoch loops only (``TrainResult.seconds``;
the same span for the plain loop).  Variants alternate over rounds (order rotated) and the
script prints the median of the per-round time ratios ``ppl_gen / plain`` (target <= 1.15);
the machine is shared, so absolute times are noisy and the side-by-side ratio is the figure.

``.venv/bin/python benchmarks/iwae_throughput.py [--n-train 2000] [--rounds 3] [--threads 1]``
(MNIST from ``../shared/data/mnist``; ``--synthetic`` uses random 0/1 images instead).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import ppl_gen  # noqa: F401  (sets MKL_ENABLE_INSTRUCTIONS before torch loads)

# isort: split
import torch
from plain_vae import (
    DEFAULT_DATA_ROOT,
    RESULTS,
    PlainVAE,
    copy_from_ppl_gen,
    environment,
    load_mnist,
    ppl_gen_modules,
    write_json,
)
from repo_paths import shown
from torch.nn import functional as F

from ppl_gen.data.datasets import DataSplits, binarize_batch, iterate_minibatches
from ppl_gen.infer.training import TrainConfig, train

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def plain_iwae_loss(plain: PlainVAE, xb: torch.Tensor, k: int, n: int) -> torch.Tensor:
    """``-(N / B) sum_b [logsumexp_k log w_bk - log K]`` for the plain VAE (nats)."""
    loc, scale = plain.encoder(xb)
    eps = torch.randn(k, *loc.shape)
    z = loc + scale * eps
    logits = plain.decoder(z)
    log_lik = -F.binary_cross_entropy_with_logits(
        logits, xb.expand_as(logits), reduction="none"
    ).sum(-1)
    log_prior = -0.5 * z.pow(2).sum(-1) - z.shape[-1] * HALF_LOG_2PI
    log_q = -0.5 * eps.pow(2).sum(-1) - scale.log().sum(-1) - z.shape[-1] * HALF_LOG_2PI
    iwae = torch.logsumexp(log_lik + log_prior - log_q, dim=0) - math.log(k)
    return -iwae.sum() * (n / xb.shape[0])


def train_plain_iwae(plain, x, *, k, epochs, batch_size, lr, seed) -> tuple[float, float]:
    """``(seconds, final-epoch train IWAE-K per datapoint)`` of the plain loop."""
    torch.manual_seed(seed)
    shuffle = torch.Generator().manual_seed(seed)
    binarize = torch.Generator().manual_seed(seed + 1)
    n = x.shape[0]
    optimizer = torch.optim.Adam(plain.parameters(), lr=lr)
    seconds, total = 0.0, 0.0
    for _ in range(epochs):
        t0, total = time.perf_counter(), 0.0
        for idx in iterate_minibatches(n, batch_size, generator=shuffle):
            loss = plain_iwae_loss(plain, binarize_batch(x[idx], binarize), k, n)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * idx.shape[0] / n
        seconds += time.perf_counter() - t0
    return seconds, -total / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "iwae_throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.synthetic:
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(args.n_train, 784, generator=gen)
        data_name = "synthetic"
    else:
        x = load_mnist(args.data_root).train[: args.n_train]
        data_name = "mnist"
    empty = x[:0]
    splits = DataSplits(data_name, x, empty, empty, None, None, None, (28, 28), "dynamic")
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        objective="iwae",
        k=args.k,
        val_every=0,
        progress=False,
        device="cpu",
    )
    times: dict[str, list[float]] = {"plain": [], "ppl_gen": []}
    ratios, final = [], {}
    for r in range(args.rounds):
        torch.manual_seed(r)
        model, guide = ppl_gen_modules()
        plain = PlainVAE()
        copy_from_ppl_gen(plain, model, guide)
        order = ["plain", "ppl_gen"] if r % 2 == 0 else ["ppl_gen", "plain"]
        for name in order:
            if name == "plain":
                sec, value = train_plain_iwae(
                    plain, x, k=args.k, epochs=args.epochs, batch_size=args.batch_size,
                    lr=config.lr, seed=r,
                )  # fmt: skip
            else:
                result = train(model, guide, splits, TrainConfig(**{**vars(config), "seed": r}))
                sec, value = result.seconds, result.history["train_elbo"][-1]
            times[name].append(sec)
            final[name] = value
        ratios.append(times["ppl_gen"][-1] / times["plain"][-1])
        print(
            f"round {r}: plain {times['plain'][-1]:.2f} s, ppl_gen {times['ppl_gen'][-1]:.2f} s, "
            f"ratio {ratios[-1]:.3f}",
            flush=True,
        )
    steps = args.epochs * -(-args.n_train // args.batch_size)
    payload = {
        "benchmark": "iwae_throughput",
        "data": data_name,
        "n_train": args.n_train,
        "k": args.k,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "seconds": times,
        "median_seconds": {n: statistics.median(t) for n, t in times.items()},
        "steps_per_round": steps,
        "ratio_ppl_gen_over_plain": ratios,
        "median_ratio": statistics.median(ratios),
        "target_ratio": 1.15,
        "final_train_iwae": final,
        "environment": environment(),
    }
    write_json(args.out, payload)
    print(
        f"IWAE-{args.k} training, {steps} steps of batch {args.batch_size}: median time ratio "
        f"ppl_gen / plain = {payload['median_ratio']:.3f} (target <= 1.15); -> {shown(args.out)}"
    )


if __name__ == "__main__":
    main()
