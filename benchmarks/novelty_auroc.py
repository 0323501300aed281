"""Novelty detection on MNIST: train without one digit class, detect it in the test set.

For each model -- the plain (``ae``), denoising (``dae``, Gaussian noise 0.3), sparse
(``sae``, L1 0.05) and contractive (``cae``, 0.05) autoencoders (MLP 784-256-16, sigmoid
output, cross-entropy) and the VAE (784-256-16, Bernoulli, dynamic binarisation) -- train on
the MNIST training images without each of ``--holdout-classes`` (default 9, then 0;
``ppl_gen.jobs.novelty.run_novelty``), score the 10,000 test images and report the AUROC of
the held-out class: by squared reconstruction error for every model, and for the VAE also
by ``-IWAE-K`` (nats).

Writes ``benchmarks/results/novelty_auroc.json``.

``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/novelty_auroc.py [--holdout-classes 9,0]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import ppl_gen  # noqa: F401  (sets MKL_ENABLE_INSTRUCTIONS before torch loads)

# isort: split
import torch

from ppl_gen.core.io import write_json
from ppl_gen.jobs.novelty import MODELS, NoveltyConfig, run_novelty

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--holdout-classes", default="9,0", help="comma-separated classes")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--iwae-k", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default=str(REPO / "benchmarks" / "results" / "novelty_auroc.json")
    )
    args = parser.parse_args()
    if not Path(args.data_root).is_dir():
        sys.exit(f"MNIST not found at {args.data_root} (--data-root)")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    rows: dict[str, dict] = {}
    classes = [int(c) for c in args.holdout_classes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        for holdout in classes:
            rows[str(holdout)] = {}
            for model in args.models.split(","):
                config = NoveltyConfig(
                    model=model,
                    holdout_class=holdout,
                    data="mnist",
                    data_root=args.data_root,
                    latent_dim=args.latent_dim,
                    hidden=(256,),
                    epochs=args.epochs,
                    iwae_k=args.iwae_k,
                    seed=args.seed,
                    device="cpu",
                    out=str(Path(tmp) / f"{holdout}_{model}"),
                    progress=False,
                )
                m = run_novelty(config)
                m.pop("checkpoint", None)
                rows[str(holdout)][model] = m
                scores = ", ".join(f"{k} {v:.4f}" for k, v in m["auroc"].items())
                print(
                    f"{model:4s} without class {holdout}: AUROC {scores} "
                    f"(trained {m['train_seconds']:.0f} s on {m['n_train']} images)",
                    flush=True,
                )
    write_json(
        args.out,
        {
            "holdout_classes": classes,
            "epochs": args.epochs,
            "latent_dim": args.latent_dim,
            "iwae_k": args.iwae_k,
            "by_holdout_class": rows,
            "load_average": [round(v, 2) for v in os.getloadavg()],
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
