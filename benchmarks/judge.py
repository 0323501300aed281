"""The MNIST judge and the FD-LeNet reference points, reproducibly.

The judge (``ppl_gen.metrics.classifier``) is made by one command::

    ppl-gen train classifier --data-root ../shared/data/mnist

(10 epochs, batch 128, Adam 1e-3, seed 0, portable CPU numerics), which writes it
to the cache (``$PPL_GEN_CACHE`` / ``$XDG_CACHE_HOME/ppl_gen`` / ``~/.cache/ppl_gen``,
``lenet_mnist.pt``).  This script loads it, records its weights' SHA-256
(``weights_sha256``), its accuracy on the 10,000 test images and the environment, and with
``--retrain`` trains a second copy with the same settings in a temporary folder and checks
the checksums agree.

FD-LeNet reference points (all against the 10,000 official test images unless noted):

* ``train_10k_vs_test`` -- a seeded 10,000 of the training images: what a generator that
  reproduced training digits exactly would score with the 10,000 samples ``ppl-gen
  evaluate`` draws.  This is the **reference** ("floor") a generator's FD-LeNet is compared
  with; it is not zero because training and test digits differ and 10,000 images estimate
  the feature statistics with error.
* ``train_all_vs_test`` -- all 14,262 training images of the shared copy.
* ``test_halves`` -- two seeded halves of the test set (5,000 vs 5,000): what
  ``ppl-gen evaluate`` reports as ``fd_lenet_real_halves``; smaller than the above (same
  distribution, no train/test shift), so it is *not* the score of a perfect generator.

``.venv/bin/python benchmarks/judge.py [--data-root DIR] [--classifier PATH] [--retrain]``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import ppl_gen  # noqa: F401

# isort: split
import torch
from plain_vae import DEFAULT_DATA_ROOT, RESULTS, environment, write_json
from repo_paths import shown
from torch import nn

from ppl_gen.data.images import ImageData, load_images
from ppl_gen.jobs.train_classifier import ClassifierJob, run_train_classifier
from ppl_gen.metrics.classifier import (
    REFERENCE_WEIGHTS_SHA256,
    ClassifierConfig,
    accuracy,
    default_classifier_path,
    load_classifier,
)
from ppl_gen.metrics.generative import FDLeNet, real_halves_fd

COMMAND = "ppl-gen train classifier --data-root ../shared/data/mnist"


def fd_references(classifier, data_root: Path, seed: int = 0) -> dict[str, float]:
    """The FD-LeNet reference points of the module docs."""
    train = load_images("mnist", data_root).images
    test = load_images("mnist", data_root, split="test").images
    fd = FDLeNet(classifier, test)
    idx = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(seed))[:10000]
    return {
        "train_10k_vs_test": fd.fd(train[idx]),
        "train_all_vs_test": fd.fd(train),
        "test_halves": real_halves_fd(classifier, test, seed),
        "n_train": int(train.shape[0]),
        "n_test": int(test.shape[0]),
    }


def judge_summary(judge: nn.Module, path: Path, test: ImageData) -> dict:
    """``path`` (shown relative), ``weights_sha256``, ``is_reference`` (equals
    ``REFERENCE_WEIGHTS_SHA256``) and ``test_accuracy`` (fraction of the real test images
    ``test: (N, 1, 28, 28)`` in [0, 1] with labels) of ``judge`` (from :func:`load_classifier`)."""
    return {
        "path": shown(path),
        "weights_sha256": judge.weights_sha256,
        "is_reference": judge.weights_sha256 == REFERENCE_WEIGHTS_SHA256,
        "test_accuracy": accuracy(judge, test.images, test.labels),
    }


def fd_reference_points(judge: nn.Module, data_root: Path) -> dict[str, float]:
    """:func:`fd_references` of ``judge``: read from ``results/judge.json`` when that record
    is for the same weights, else computed (~45 s)."""
    path = RESULTS / "judge.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    if record.get("weights_sha256") == judge.weights_sha256 and "fd_references" in record:
        return record["fd_references"]
    return fd_references(judge, data_root)


def judge_record(judge: nn.Module, path: Path, test: ImageData, data_root: Path) -> dict:
    """What results must say about the judge they were scored with: :func:`judge_summary`
    plus ``fd_references`` (:func:`fd_reference_points`; ``train_10k_vs_test`` is the
    reference, ``test_halves`` is not a floor)."""
    return {
        **judge_summary(judge, path, test),
        "fd_references": fd_reference_points(judge, data_root),
    }


def describe_judge(record: dict) -> str:
    """One log line for a :func:`judge_record`: checksum, accuracy, FD-LeNet references."""
    refs = record["fd_references"]
    return (
        f"judge {record['path']}: SHA-256 {record['weights_sha256']} (reference judge: "
        f"{record['is_reference']}), test accuracy {100 * record['test_accuracy']:.2f}%; "
        f"FD-LeNet reference (10,000 training images vs test) {refs['train_10k_vs_test']:.3f}, "
        f"two test halves {refs['test_halves']:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--classifier", type=Path, default=None)
    parser.add_argument("--retrain", action="store_true", help="train a second copy, compare")
    args = parser.parse_args()
    t0 = time.perf_counter()
    path = args.classifier or default_classifier_path()
    judge = load_classifier(path, "cpu")
    test = load_images("mnist", args.data_root, split="test")
    record = {
        "command": COMMAND,
        **judge_summary(judge, path, test),
        "reference_weights_sha256": REFERENCE_WEIGHTS_SHA256,
    }
    print(
        f"judge {path}: SHA-256 {judge.weights_sha256} (reference: {record['is_reference']}), "
        f"test accuracy {record['test_accuracy']:.4f}"
    )
    if args.retrain:
        with tempfile.TemporaryDirectory() as tmp:
            config = ClassifierConfig(device="cpu", progress=False)
            metrics = run_train_classifier(ClassifierJob(args.data_root, out=tmp, train=config))
        record["retrained_weights_sha256"] = metrics["weights_sha256"]
        record["retrain_identical"] = metrics["weights_sha256"] == judge.weights_sha256
        record["retrain_seconds"] = metrics["train_seconds"]
        print(f"retrained: {metrics['weights_sha256']} identical {record['retrain_identical']}")
    record["fd_references"] = fd_references(judge, args.data_root)
    print(
        "FD-LeNet references: "
        + ", ".join(
            f"{k} {v:.3f}" for k, v in record["fd_references"].items() if "vs" in k or "halves" in k
        )  # fmt: skip
    )
    record.update(
        load_average=os.getloadavg(),
        environment=environment(),
        wall_seconds=time.perf_counter() - t0,
    )
    write_json(RESULTS / "judge.json", record)


if __name__ == "__main__":
    main()
