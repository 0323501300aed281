"""Stabilisers on MNIST: FD-LeNet and mode coverage per choice (small CPU budget).

DCGAN (ngf = ndf = 32, z 64, batch 64, Adam 2e-4 (0.5, 0.999)) and the MLP GAN (256-512)
trained on a seeded ``--n-train`` subset of the MNIST training images for ``--epochs``
epochs each, once per stabiliser choice: the baseline (non-saturating ``vanilla`` loss), the
hinge loss, hinge + spectral normalisation of D, R1 (gamma 10), the generator EMA (decay
0.999) and all of them together.  Each generator (the EMA one where kept) draws
``--n-samples`` images, scored against the 10,000 MNIST test images by the reference judge
(``benchmarks/judge.py``): FD-LeNet (the FD of 10,000 training images against the same
test set, from ``results/judge.json``, is the reference) and mode coverage (classes
receiving >= 10% of their fair share, KL of the class histogram to uniform).  One seed per
row: differences of a few FD points are within run-to-run noise at this budget.

``.venv/bin/python benchmarks/gan_stabilisers.py [--n-train 5000] [--epochs 3] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import ppl_gen  # noqa: F401

# isort: split
import torch
from judge import fd_reference_points
from plain_vae import DEFAULT_DATA_ROOT, RESULTS, environment, write_json

from ppl_gen.data.images import load_images
from ppl_gen.gan.trainer import GANConfig, train_gan
from ppl_gen.metrics.classifier import load_classifier
from ppl_gen.metrics.generative import FDLeNet, mode_coverage, predict_classes, sample_images

CHOICES = {
    "baseline (vanilla)": {},
    "hinge": {"loss": "hinge"},
    "hinge + spectral norm": {"loss": "hinge", "spectral_norm": True},
    "R1 (gamma 10)": {"r1": 10.0},
    "EMA 0.999": {"ema": 0.999},
    "hinge + SN + R1 + EMA": {"loss": "hinge", "spectral_norm": True, "r1": 10.0, "ema": 0.999},
}


def score(generator, judge, fd: FDLeNet, n_samples: int, seed: int = 123) -> dict:
    """FD-LeNet and mode coverage of ``n_samples`` images of ``generator``."""
    fake = sample_images(generator, n_samples, seed=seed)
    cov = mode_coverage(predict_classes(judge, fake))
    return {
        "fd_lenet": fd.fd(fake),
        "classes_covered": cov["classes_covered"],
        "kl_to_uniform": cov["kl_to_uniform"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-samples", type=int, default=5000)
    parser.add_argument("--models", default="dcgan,gan")
    parser.add_argument("--quick", action="store_true", help="1,000 images, 1 epoch")
    args = parser.parse_args()
    if args.quick:
        args.n_train, args.epochs, args.n_samples = 1000, 1, 1000
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    judge = load_classifier(None, "cpu")
    reference = fd_reference_points(judge, args.data_root)["train_10k_vs_test"]
    data = load_images("mnist", args.data_root, n=args.n_train, seed=0)
    fd = FDLeNet(judge, load_images("mnist", args.data_root, split="test").images)
    rows = []
    for model in args.models.split(","):
        for name, kw in CHOICES.items():
            out = (
                Path(os.environ.get("TMPDIR", "/tmp"))
                / "ppl_gen_bench"
                / f"stab_{model}_{len(rows)}"
            )
            config = GANConfig(
                model=model, latent_dim=64, ngf=32, ndf=32, epochs=args.epochs,
                device="cpu", progress=False, out=str(out), **kw,
            )  # fmt: skip
            result = train_gan(data, config)
            row = {"model": model, "choice": name, "settings": kw, "train_seconds": result.seconds}
            row.update(score(result.sampler, judge, fd, args.n_samples))
            rows.append(row)
            print(
                f"{model:5s} {name:24s} FD-LeNet {row['fd_lenet']:8.2f}  classes "
                f"{row['classes_covered']}/10  KL {row['kl_to_uniform']:.3f}  "
                f"[{result.seconds:.0f} s]",
                flush=True,
            )
            last = out / f"samples_epoch_{args.epochs:03d}.png"
            if last.is_file() and name == "hinge + SN + R1 + EMA":
                shutil.copy(last, RESULTS / f"gan_stabilisers_{model}_all.png")
    write_json(
        RESULTS / ("gan_stabilisers_quick.json" if args.quick else "gan_stabilisers.json"),
        {
            "judge_sha256": judge.weights_sha256,
            "n_train": args.n_train,
            "epochs": args.epochs,
            "n_samples": args.n_samples,
            "fd_reference_train_10k_vs_test": reference,
            "rows": rows,
            "load_average": os.getloadavg(),
            "environment": environment(),
            "wall_seconds": time.perf_counter() - t0,
        },
    )


if __name__ == "__main__":
    main()
