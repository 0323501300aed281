"""``ppl-gen train classifier``: train the MNIST judge and write it where the metrics look.

The judge goes to ``out / "lenet_mnist.pt"`` when ``out`` is given, else to
:func:`ppl_gen.metrics.classifier.default_classifier_path` (the documented cache location,
``$PPL_GEN_CACHE``, ``$XDG_CACHE_HOME/ppl_gen`` or ``~/.cache/ppl_gen``), with
``metrics.json`` beside it.  Both files are written atomically under the folder's output
lock, after training has finished, so a half-trained judge never appears at that path.

On the CPU the judge is trained with portable numerics (:mod:`ppl_gen.core.portable`): the
job checks its settings and output folder, then loads the data and trains in a fresh interpreter
(``python -m ppl_gen.jobs.train_classifier``) whose scalar kernels and MKL code path are
the same on every x86-64 CPU, so the documented command gives the reference judge's
checksum on any such machine.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ppl_gen.core.device import resolve_device
from ppl_gen.core.errors import PplGenError
from ppl_gen.core.io import check_output_dir, output_lock, write_json
from ppl_gen.core.portable import (
    enter_portable_numerics,
    portable_numerics_active,
    run_portable_module,
)
from ppl_gen.data.datasets import load_dataset
from ppl_gen.engine.history import enable_tensorboard, tensorboard_enabled
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
        portable: on the CPU, train with portable numerics in a fresh interpreter (module
            docs; about 2.5x slower); ``False`` trains in this process with the machine's
            fastest kernels (same weights on the same machine only).
    """

    data_root: str | os.PathLike | None
    n_train: int | None = None
    out: str | os.PathLike | None = None
    train: ClassifierConfig | None = None
    portable: bool = True


def classifier_destination(out: str | os.PathLike | None) -> Path:
    """The judge's path for ``out`` (``out / "lenet_mnist.pt"``, or the default cache path)."""
    return Path(out) / CLASSIFIER_FILE if out is not None else default_classifier_path()


def run_train_classifier(job: ClassifierJob) -> dict[str, Any]:
    """Train the judge on MNIST and write ``lenet_mnist.pt`` and ``metrics.json``.

    Returns:
        The metrics: ``test_accuracy``, ``val_accuracy``, ``train_accuracy`` (fractions),
        ``train_seconds`` (s), ``epochs``, ``n_train``, ``history``, ``checkpoint`` (the
        judge's path), ``numerics`` (``portable`` or ``native``) and ``weights_sha256``.

    Raises:
        PplGenError: bad settings (naming the parameter), an unusable ``out`` folder, or
            missing MNIST files (naming ``data_root``).
        TrainingDiverged: a non-finite or exploded loss.
    """
    config = job.train or ClassifierConfig()
    config.validate()
    device = resolve_device(config.device)  # refuse an unknown or absent device first
    path = classifier_destination(job.out)
    check_output_dir(path.parent, "out")
    portable = job.portable and device.type == "cpu"
    if portable and not portable_numerics_active():  # the child loads and checks the data
        return _train_in_portable_child(job, config, path)
    if portable:
        enter_portable_numerics()
    splits = load_dataset("mnist", job.data_root, seed=config.seed, n_train=job.n_train)
    net, metrics = train_classifier(
        splits.train, splits.train_labels, config, test_x=splits.test, test_y=splits.test_labels
    )
    metrics["val_accuracy"] = accuracy(net, splits.val, splits.val_labels)
    metrics["n_train"] = int(splits.train.shape[0])
    metrics["checkpoint"] = str(path)
    metrics["numerics"] = "portable" if portable else "native"
    with output_lock(path.parent):
        save_classifier(path, net, metrics, config)
        write_json(path.parent / "metrics.json", metrics)
    return metrics


def _train_in_portable_child(job: ClassifierJob, config: ClassifierConfig, path: Path) -> dict:
    payload = {
        "data_root": None if job.data_root is None else str(job.data_root),
        "n_train": job.n_train,
        "out": str(path.parent),
        "train": asdict(config),
        "tensorboard": tensorboard_enabled(),
    }
    with tempfile.TemporaryDirectory(prefix="ppl_gen_judge_") as tmp:
        error_file = Path(tmp) / "error.txt"
        run_portable_module(__name__, [json.dumps(payload), str(error_file)], error_file=error_file)
    return json.loads((path.parent / "metrics.json").read_text())


def _child_main(argv: list[str]) -> int:
    """Entry point of the portable child: ``python -m ppl_gen.jobs.train_classifier
    PAYLOAD_JSON ERROR_FILE`` (run by :func:`run_train_classifier`)."""
    payload, error_file = json.loads(argv[0]), Path(argv[1])
    try:
        enable_tensorboard(payload["tensorboard"])
        job = ClassifierJob(
            payload["data_root"],
            n_train=payload["n_train"],
            out=payload["out"],
            train=ClassifierConfig(**payload["train"]),
        )
        run_train_classifier(job)
    except PplGenError as exc:  # one line for the parent to raise
        error_file.write_text(str(exc))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
