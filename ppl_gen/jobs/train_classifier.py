"""``ppl-gen train classifier``: train the MNIST judge and write it where the metrics look.

The judge goes to ``out / "lenet_mnist.pt"`` when ``out`` is given, else to
:func:`ppl_gen.metrics.classifier.default_classifier_path` (the documented cache location,
``$PPL_GEN_CACHE``, ``$XDG_CACHE_HOME/ppl_gen`` or ``~/.cache/ppl_gen``), with
``metrics.json`` beside it.  Both files are written atomically under the folder's output
lock, after training has finished, so a half-trained judge never appears at that path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppl_gen.core.device import resolve_device
from ppl_gen.core.io import check_output_dir, output_lock, write_json
from ppl_gen.data.datasets import load_dataset
from ppl_gen.metrics.classifier import (
    CLASSIFIER_FILE,
    ClassifierConfig,
    accuracy,
    default_classifier_path,
    save_classifier,
    train_classifier,
)


@dataclass
class ClassifierJob:
    """Settings of :func:`run_train_classifier`.

    Attributes:
        data_root: folder holding ``MNIST/raw`` (torchvision layout); required.
        n_train: use only the first ``n_train`` training images (``None``: all).
        out: output folder (``None``: the cache folder of
            :func:`~ppl_gen.metrics.classifier.default_classifier_path`).
        train: the training settings (:class:`~ppl_gen.metrics.classifier.ClassifierConfig`).
    """

    data_root: str | os.PathLike | None
    n_train: int | None = None
    out: str | os.PathLike | None = None
    train: ClassifierConfig | None = None


def classifier_destination(out: str | os.PathLike | None) -> Path:
    """The judge's path for ``out`` (``out / "lenet_mnist.pt"``, or the default cache path)."""
    return Path(out) / CLASSIFIER_FILE if out is not None else default_classifier_path()


def run_train_classifier(job: ClassifierJob) -> dict[str, Any]:
    """Train the judge on MNIST and write ``lenet_mnist.pt`` and ``metrics.json``.

    Returns:
        The metrics: ``test_accuracy``, ``val_accuracy``, ``train_accuracy`` (fractions),
        ``train_seconds`` (s), ``epochs``, ``n_train``, ``history`` and ``checkpoint`` (the
        judge's path).

    Raises:
        PplGenError: bad settings (naming the parameter), an unusable ``out`` folder, or
            missing MNIST files (naming ``data_root``).
        TrainingDiverged: a non-finite or exploded loss.
    """
    config = job.train or ClassifierConfig()
    config.validate()
    resolve_device(config.device)  # refuse an unknown or absent device before loading data
    path = classifier_destination(job.out)
    check_output_dir(path.parent, "out")
    splits = load_dataset("mnist", job.data_root, seed=config.seed, n_train=job.n_train)
    net, metrics = train_classifier(
        splits.train, splits.train_labels, config, test_x=splits.test, test_y=splits.test_labels
    )
    metrics["val_accuracy"] = accuracy(net, splits.val, splits.val_labels)
    metrics["n_train"] = int(splits.train.shape[0])
    metrics["checkpoint"] = str(path)
    with output_lock(path.parent):
        save_classifier(path, net, metrics, config)
        write_json(path.parent / "metrics.json", metrics)
    return metrics
