"""Conditional VAE on MNIST: are class-conditional samples recognised as their class?

Trains the CVAE (Sohn et al. 2015; as ``ppl-gen train cvae``: MLP encoder 794-400-2Z,
decoder (Z+10)-400-784 Bernoulli, dynamic binarisation, Adam 1e-3, batch 128) on the MNIST
training images for each latent size in ``--latent-dims`` (default 2 -- the target's -- and
20, to show how agreement depends on Z: a large latent space lets the encoder carry the
class in ``z`` too, so prior samples mix classes), draws ``--per-class`` samples of every
class (``z ~ N(0, I)``, decoder means) and classifies them with the project's
independently trained LeNet judge (``ppl_gen.metrics.classifier``: ``--classifier`` or the
cached judge at ``default_classifier_path()``, ``$PPL_GEN_CACHE`` /
``$XDG_CACHE_HOME/ppl_gen`` / ``~/.cache/ppl_gen``, made by ``ppl-gen train classifier
--data-root DIR``; the script stops when it is absent).
Target: >= 90% of the samples of each requested class are classified as that class.
Also records the judge's weights SHA-256 (and whether it is the reference judge) and its
accuracy on real test images, and the test ELBO / IWAE-K bounds on log p(x | y) in nats.

Writes ``benchmarks/results/cvae_class_agreement.json``.

``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cvae_class_agreement.py [--epochs 30]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import ppl_gen  # noqa: F401  (sets MKL_ENABLE_INSTRUCTIONS before torch loads)

# isort: split
import torch
from plain_vae import environment
from repo_paths import shown

from ppl_gen.autoencoders.conditional import cvae_bounds, sample_classes, train_cvae
from ppl_gen.core.io import write_json
from ppl_gen.data.datasets import load_dataset
from ppl_gen.infer.training import TrainConfig
from ppl_gen.metrics.classifier import (
    REFERENCE_WEIGHTS_SHA256,
    accuracy,
    default_classifier_path,
    load_classifier,
)

REPO = Path(__file__).resolve().parents[1]


def run_one(args, splits, classifier, z_dim: int) -> dict:
    config = TrainConfig(
        epochs=args.epochs, batch_size=128, lr=1e-3, seed=args.seed, device="cpu", progress=False
    )
    t0 = time.perf_counter()  # train_cvae seeds everything with config.seed
    fit = train_cvae(splits, config, latent_dim=z_dim, hidden=(400,))
    train_seconds = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(args.seed + 7)
    images, labels = sample_classes(fit.model, range(10), args.per_class, gen)
    with torch.no_grad():
        predicted = classifier.predict(images)
        binary = classifier.predict(torch.bernoulli(images, generator=gen))
    per_class = {str(c): float((predicted[labels == c] == c).float().mean()) for c in range(10)}
    per_class_binary = {str(c): float((binary[labels == c] == c).float().mean()) for c in range(10)}
    n = args.n_test_bounds
    bounds = cvae_bounds(fit.model, fit.guide, splits.test[:n], splits.test_labels[:n], args.iwae_k)
    row = {
        "latent_dim": z_dim,
        "agreement_overall": float((predicted == labels).float().mean()),
        "agreement_min_class": min(per_class.values()),
        "agreement_per_class": per_class,
        "agreement_binary_samples_overall": float((binary == labels).float().mean()),
        "agreement_binary_per_class": per_class_binary,
        "test_elbo": bounds.elbo_mean,
        "test_elbo_se": bounds.elbo_se,
        "test_iwae": bounds.iwae_mean,
        "test_iwae_se": bounds.iwae_se,
        "iwae_k": args.iwae_k,
        "n_test_bounds": int(bounds.elbo.shape[0]),
        "bound_units": "nats per image, bounds on log p(x|y)",
        "train_seconds": train_seconds,
    }
    print(
        f"Z={z_dim}: agreement {row['agreement_overall']:.4f} overall, worst class "
        f"{row['agreement_min_class']:.3f} (target >= 0.9 per class), per class "
        + " ".join(f"{c}:{v:.2f}" for c, v in per_class.items())
        + f"; binary samples {row['agreement_binary_samples_overall']:.4f}; test ELBO "
        f"{bounds.elbo_mean:.2f} ± {bounds.elbo_se:.2f}, IWAE-{args.iwae_k} "
        f"{bounds.iwae_mean:.2f} ± {bounds.iwae_se:.2f} nats (log p(x|y), {n} test images); "
        f"trained {train_seconds:.0f} s",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument(
        "--latent-dims", default="2,20", help="latent sizes; the first is the target's"
    )
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--iwae-k", type=int, default=100)
    parser.add_argument("--n-test-bounds", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classifier", default=None)
    parser.add_argument(
        "--out", default=str(REPO / "benchmarks" / "results" / "cvae_class_agreement.json")
    )
    args = parser.parse_args()
    if not Path(args.data_root).is_dir():
        sys.exit(f"MNIST not found at {args.data_root} (--data-root)")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t0 = time.perf_counter()

    splits = load_dataset("mnist", args.data_root, binarize="dynamic", seed=args.seed)
    grey = load_dataset("mnist", args.data_root, seed=args.seed)
    path = Path(args.classifier) if args.classifier else default_classifier_path()
    classifier = load_classifier(path)  # stops with how to create it when absent
    reference = accuracy(classifier, grey.test, grey.test_labels)
    is_reference = classifier.weights_sha256 == REFERENCE_WEIGHTS_SHA256
    print(
        f"judge {shown(path)}: SHA-256 {classifier.weights_sha256} (reference judge: "
        f"{is_reference}), test accuracy on real images {reference:.4f}",
        flush=True,
    )

    runs = {}
    for z_dim in (int(v) for v in args.latent_dims.split(",")):
        runs[str(z_dim)] = run_one(args, splits, classifier, z_dim)
    first = runs[args.latent_dims.split(",")[0].strip()]
    result = {
        "epochs": args.epochs,
        "n_train": int(splits.train.shape[0]),
        "per_class_samples": args.per_class,
        "classifier": shown(path),
        "classifier_weights_sha256": classifier.weights_sha256,
        "classifier_is_reference": is_reference,
        "classifier_test_accuracy_real_images": reference,
        "target_latent_dim": first["latent_dim"],
        "pass": first["agreement_min_class"] >= 0.9,
        "by_latent_dim": runs,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "environment": environment(),
        "wall_seconds": time.perf_counter() - t0,
    }
    write_json(args.out, result)
    print(f"wrote {shown(args.out)}")


if __name__ == "__main__":
    main()
