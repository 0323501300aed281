"""Burda et al. 2016, Table 1, in relative terms: VAE (ELBO) against IWAE-K training.

On our MNIST copy (``../shared/data/mnist``: 14,262 training images, the official 10,000
test images; dynamic binarisation), with one and two stochastic layers, trained with

* the ELBO (``objective="elbo"``; ``analytic-kl`` for one layer, ``trace`` for two),
* IWAE k=5 and k=50, each with the ``reparam`` and the ``dreg`` gradient
  (:mod:`ppl_gen.infer.objectives`; Tucker et al. 2019),

and scored by the test IWAE-5000 (:func:`ppl_gen.evaluate_bounds`) of the first
``--n-test`` test images -- and by AIS (:func:`ppl_gen.infer.ais.evaluate_ais`) when
``--ais-steps`` > 0.  Reported: each model's test log-likelihood estimate and its
improvement over the ELBO-trained model with the same layers (paired over test images,
with its standard error), beside the paper's improvements (one layer: k=5 1.22, k=50 1.98
nats; two layers: 1.44 and 2.43).

Architectures (Burda et al. 2016, sec. 5, tanh units; ``--width`` scales the hidden
widths): one layer ``x -> 200-200 -> z(50)``, decoder mirrored; two layers
``x -> 200-200 -> z1(100) -> 100-100 -> z2(50)``, generative ``z2 -> 100-100 -> z1 -> 200-200
-> x`` (hand-written Pyro model below; guide
:class:`ppl_gen.guides.StructuredAmortisedGuide`, ``q(z1 | x) q(z2 | z1, x)``, when it exists,
else the default :class:`ppl_gen.guides.AmortisedGaussianGuide`, mean-field given x).

The paper trains for 3,280 passes over 60,000 images; on two shared CPU cores the default
budget here is ``--epochs 1`` with ``--width 0.5``, i.e. far from convergence: the figures
are relative (same budget, same initial weights, same test images), not the paper's.

``.venv/bin/python benchmarks/burda_table1.py [--epochs 1] [--width 0.5] [--n-test 200]``
writes ``benchmarks/results/burda_table1.json`` and ``burda_table1.md``.  The committed
results were measured with ``--n-train 5000 --epochs 6 --batch-size 20 --width 1 --n-test 250
--eval-k 5000 --threads 1`` (768 s on one shared CPU thread; test IWAE-5000 ~ -130 to -177
nats, i.e. ~45-90 nats from the paper's converged models).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import ppl_gen

# isort: split
import pyro
import pyro.distributions as dist
import torch
from repo_paths import shown
from torch import nn
from torch.nn import functional as F

from ppl_gen.core.io import write_json, write_text
from ppl_gen.core.naming import unique_scope
from ppl_gen.engine import seed_everything
from ppl_gen.guides import AmortisedGaussianGuide
from ppl_gen.lvm.nets import mlp
from ppl_gen.lvm.plates import data_plate

RESULTS = Path(__file__).resolve().parent / "results"
DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
#: (objective, k, estimator) of each row of the table.
CONFIGS = {
    "elbo": ("elbo", 1, "reparam"),
    "iwae5": ("iwae", 5, "reparam"),
    "iwae5-dreg": ("iwae", 5, "dreg"),
    "iwae50": ("iwae", 50, "reparam"),
    "iwae50-dreg": ("iwae", 50, "dreg"),
}
#: Burda et al. 2016 Table 1 (MNIST, test -log p(x) by IWAE-5000): VAE and IWAE, nats.
PAPER = {
    1: {"elbo": 86.76, "iwae5": 85.54, "iwae50": 84.78},
    2: {"elbo": 85.33, "iwae5": 83.89, "iwae50": 82.90},
}


class TwoLayerVAE(nn.Module):
    """``z2 ~ N(0, I)``, ``z1 | z2 ~ N(mu(z2), diag sigma(z2)^2)``, ``x | z1 ~ Bernoulli``
    (Burda et al. 2016's two-stochastic-layer generative network)."""

    def __init__(self, z1: int, z2: int, h1: int, h2: int) -> None:
        super().__init__()
        self.z1, self.z2 = z1, z2
        self.top = mlp(z2, [h2, h2], 2 * z1, activation=nn.Tanh)
        self.bottom = mlp(z1, [h1, h1], 784, activation=nn.Tanh)
        self.scope = unique_scope(type(self).__name__)

    def forward(self, x, indices=None, size=None):
        pyro.module(self.scope, self)
        with data_plate(x, indices, size):
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(x.shape[0], self.z2), 1.0).to_event(1))
            loc, raw = self.top(z2).chunk(2, dim=-1)
            z1 = pyro.sample("z1", dist.Normal(loc, 1e-4 + F.softplus(raw)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.bottom(z1)).to_event(1), obs=x)


def build(layers: int, width: float):
    """Model, guide and a note naming the guide."""
    h1, h2 = max(1, round(200 * width)), max(1, round(100 * width))
    if layers == 1:
        model = ppl_gen.LatentVariableModel(
            latent_dim=50,
            decoder=mlp(50, [h1, h1], 784, activation=nn.Tanh),
            data_dim=784,
            likelihood="bernoulli",
        )
        body = nn.Sequential(mlp(784, [h1], h1, activation=nn.Tanh), nn.Tanh())
        body.out_dim = h1
        return model, AmortisedGaussianGuide(model, encoder_body=body), "AmortisedGaussianGuide"
    model = TwoLayerVAE(100, 50, h1, h2)
    try:
        from ppl_gen.guides import StructuredAmortisedGuide
    except ImportError:
        return model, AmortisedGaussianGuide(model, hidden=(h1, h1)), "AmortisedGaussianGuide"
    guide = StructuredAmortisedGuide(model, hidden=(h1, h1), site_hidden=(h2, h2))
    return model, guide, "StructuredAmortisedGuide q(z1|x) q(z2|z1,x)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--layers", default="1,2")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--eval-k", type=int, default=5000)
    parser.add_argument("--ais-steps", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "burda_table1.json")
    args = parser.parse_args()
    if not (args.data_root / "MNIST" / "raw").is_dir():
        print(f"skipped: MNIST not found under {args.data_root}", file=sys.stderr)
        return
    torch.set_num_threads(args.threads)
    data = ppl_gen.load_dataset(
        "mnist", str(args.data_root), binarize="dynamic", seed=args.seed, n_train=args.n_train
    )
    x_test = data.test[: args.n_test]
    rows, t_start = [], time.perf_counter()
    for layers in [int(v) for v in args.layers.split(",")]:
        base_iwae = None
        for name in args.configs.split(","):
            objective, k, estimator = CONFIGS[name]
            seed_everything(args.seed)  # the same initial weights for every objective
            model, guide, guide_name = build(layers, args.width)
            config = ppl_gen.TrainConfig(
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                elbo="analytic-kl" if layers == 1 else "trace",
                objective=objective,
                k=k,
                estimator=estimator,
                seed=args.seed,
                val_every=0,
                progress=False,
                device="cpu",
            )
            result = ppl_gen.train(model, guide, data, config)
            t0 = time.perf_counter()
            pyro.set_rng_seed(args.seed + 1)
            bounds = ppl_gen.evaluate_bounds(model, guide, x_test, k=args.eval_k)
            row = {
                "layers": layers,
                "config": name,
                "objective": objective,
                "k": k,
                "estimator": estimator,
                "guide": guide_name,
                "train_seconds": result.seconds,
                "final_train_objective": result.history["train_elbo"][-1],
                "test_elbo": bounds.elbo_mean,
                "test_iwae": bounds.iwae_mean,
                "test_iwae_se": bounds.iwae_se,
                "eval_seconds": time.perf_counter() - t0,
            }
            if base_iwae is None:
                base_iwae = bounds.iwae
            diff = bounds.iwae - base_iwae
            row["improvement_over_elbo"] = float(diff.mean())
            row["improvement_se"] = float(diff.std() / math.sqrt(diff.numel()))
            paper = PAPER[layers]
            key = name.removesuffix("-dreg")
            if key in paper and key != "elbo":
                row["paper_improvement"] = round(paper["elbo"] - paper[key], 2)
            if args.ais_steps:
                from ppl_gen.infer.ais import evaluate_ais

                ais = evaluate_ais(model, x_test, guide, steps=args.ais_steps, seed=args.seed)
                row["test_ais"] = float(ais.log_px.mean())
            rows.append(row)
            print(
                f"{layers} layer(s) {name:<12} train {row['train_seconds']:6.1f} s  test ELBO "
                f"{row['test_elbo']:8.2f}  IWAE-{args.eval_k} {row['test_iwae']:8.2f} ± "
                f"{row['test_iwae_se']:.2f}  vs ELBO {row['improvement_over_elbo']:+.2f} ± "
                f"{row['improvement_se']:.2f} (paper {row.get('paper_improvement', '-')})",
                flush=True,
            )
    payload = {
        "benchmark": "burda_table1",
        "budget": {
            "epochs": args.epochs,
            "width": args.width,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "n_train": int(data.train.shape[0]),
            "n_test": int(x_test.shape[0]),
            "eval_k": args.eval_k,
            "threads": args.threads,
            "seed": args.seed,
            "layers": args.layers,
            "configs": args.configs,
            "command": " ".join(sys.argv),
        },
        "rows": rows,
        "total_seconds": time.perf_counter() - t_start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, payload)
    lines = [
        f"| layers | training | guide | test ELBO | test IWAE-{args.eval_k} | improvement over "
        "ELBO (nats) | paper's improvement | train s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['layers']} | {r['config']} | {r['guide']} | {r['test_elbo']:.2f} | "
            f"{r['test_iwae']:.2f} ± {r['test_iwae_se']:.2f} | {r['improvement_over_elbo']:+.2f} ± "
            f"{r['improvement_se']:.2f} | {r.get('paper_improvement', '-')} | "
            f"{r['train_seconds']:.0f} |"
        )
    write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    md = args.out.with_suffix(".md")
    print(f"wrote {shown(args.out)} and {shown(md)} ({payload['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
