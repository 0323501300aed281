"""Conditional VAE on MNIST: are class-conditional samples recognised as their class?

Trains the CVAE (Sohn et al. 2015; as ``ppl-gen train cvae``: MLP encoder 794-400-2Z,
decoder (Z+10)-400-784 Bernoulli, dynamic binarisation, Adam 1e-3, batch 128) on the MNIST
training images for each latent size in ``--latent-dims`` (default 2 -- the target's -- and
20, to show how agreement depends on Z: a large latent space lets the encoder carry the
class in ``z`` too, so prior samples mix classes), draws ``--per-class`` samples of every
class (``z ~ N(0, I)``, decoder means) and classifies them with the project's
independently trained LeNet (``ppl_gen.metrics.classifier``: ``--classifier`` or the cached
judge at ``default_classifier_path()``, ``$PPL_GEN_CACHE`` / ``$XDG_CACHE_HOME/ppl_gen`` /
``~/.cache/ppl_gen``; trained here, seed 0, when absent).
Target: >= 90% of the samples of each requested class are classified as that class.
Also reports the classifier's accuracy on real test images (the reference), and the test
ELBO / IWAE-K bounds on log p(x | y) in nats.

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

from ppl_gen.autoencoders.conditional import cvae_bounds, sample_classes, train_cvae
from ppl_gen.core.io import write_json
from ppl_gen.data.datasets import load_dataset
from ppl_gen.infer.training import TrainConfig
from ppl_gen.metrics.classifier import (
    ClassifierConfig,
    accuracy,
    default_classifier_path,
    load_classifier,
    train_classifier,
)

REPO = Path(__file__).resolve().parents[1]


def classifier_for(root: str, classifier_path: Path):
    if classifier_path.is_file():
        return load_classifier(classifier_path), str(classifier_path)
    print("no cached classifier; training one (10 epochs)", flush=True)
    grey = load_dataset("mnist", root, seed=0)
    net, _ = train_classifier(grey.train, grey.train_labels, ClassifierConfig(progress=False))
    return net, "trained in this run"


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

    splits = load_dataset("mnist", args.data_root, binarize="dynamic", seed=args.seed)
    grey = load_dataset("mnist", args.data_root, seed=args.seed)
    path = Path(args.classifier) if args.classifier else default_classifier_path()
    classifier, source = classifier_for(args.data_root, path)
    reference = accuracy(classifier, grey.test, grey.test_labels)
    print(f"classifier ({source}): test accuracy on real images {reference:.4f}", flush=True)

    runs = {}
    for z_dim in (int(v) for v in args.latent_dims.split(",")):
        runs[str(z_dim)] = run_one(args, splits, classifier, z_dim)
    first = runs[args.latent_dims.split(",")[0].strip()]
    result = {
        "epochs": args.epochs,
        "n_train": int(splits.train.shape[0]),
        "per_class_samples": args.per_class,
        "classifier": source,
        "classifier_test_accuracy_real_images": reference,
        "target_latent_dim": first["latent_dim"],
        "pass": first["agreement_min_class"] >= 0.9,
        "by_latent_dim": runs,
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
