"""The ``ppl-gen train pix2pix`` job and the ``evaluate`` handler of its checkpoints:
paired MNIST <-> MNIST-M translation (:mod:`ppl_gen.gan.pix2pix_trainer`).

Pairs: MNIST-M image ``i`` is MNIST image ``i`` blended over a photograph crop
(:mod:`ppl_gen.data.mnistm`), so the first ``n_train`` training images of both domains (and
the first ``n_test`` test images) are aligned pairs with one digit label each
(:func:`ppl_gen.data.domains.load_domain`).  ``direction`` is ``mnist-to-mnistm`` (grey
source, colour target) or ``mnistm-to-mnist``.  Training writes ``checkpoint.pt``,
``samples_epoch_NNN.png``, ``loss_curves.png`` and ``metrics.json`` (with the per-pixel L1 on
the test pairs); ``ppl-gen evaluate`` adds label preservation under the MNIST judge.
Paths in the stored data description are absolute.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ppl_gen.core.device import resolve_device
from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.core.io import check_output_dir, output_lock, write_json
from ppl_gen.data.domains import load_domain
from ppl_gen.data.images import ImageData, to_tanh_range, to_unit
from ppl_gen.engine.state import settings_record
from ppl_gen.gan.pix2pix_trainer import Pix2PixConfig, load_pix2pix, train_pix2pix
from ppl_gen.gan.steps import eval_samples
from ppl_gen.metrics.classifier import load_classifier
from ppl_gen.metrics.translation import evaluate_translation
from ppl_gen.viz.gan import save_sample_grid

DIRECTIONS = ("mnist-to-mnistm", "mnistm-to-mnist")


def _absolute(path: str | os.PathLike | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


@dataclass
class PairSource:
    """Aligned MNIST / MNIST-M pairs.

    Attributes:
        direction: ``mnist-to-mnistm`` or ``mnistm-to-mnist``.
        data_root: MNIST folder (``MNIST/raw``); bsds_root: photographs of MNIST-M.
        n_train, n_test: first N training / test pairs (``None``: all).
        seed: MNIST-M's build seed.
    """

    direction: str = "mnistm-to-mnist"
    data_root: str | None = None
    bsds_root: str | None = None
    n_train: int | None = None
    n_test: int | None = 2000
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`PplGenError` naming ``direction``, ``n_train`` or ``n_test``."""
        if self.direction not in DIRECTIONS:
            raise PplGenError(
                f"direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}"
            )
        for name, value in (("n_train", self.n_train), ("n_test", self.n_test)):
            if value is not None:
                require_positive_int(name, value)

    def load(self, split: str) -> tuple[ImageData, ImageData, torch.Tensor]:
        """``(source, target, labels)`` of ``split`` (``train`` / ``test``), CPU."""
        kw = dict(data_root=self.data_root, bsds_root=self.bsds_root, seed=self.seed)
        n = self.n_train if split == "train" else self.n_test
        names = self.direction.split("-to-")
        domains = [load_domain(name, n_train=n, n_test=n, **kw) for name in names]
        x = [d.x_train if split == "train" else d.x_test for d in domains]
        y = domains[0].y_train if split == "train" else domains[0].y_test
        data = [ImageData(name, xi, y, 10) for name, xi in zip(names, x, strict=True)]
        return data[0], data[1], y

    def spec(self) -> dict[str, Any]:
        """JSON-able description stored in the checkpoint (absolute paths)."""
        return {
            "direction": self.direction,
            "root": _absolute(self.data_root),
            "bsds_root": _absolute(self.bsds_root),
            "n_train": self.n_train,
            "n_test": self.n_test,
            "seed": self.seed,
        }


def run_train_pix2pix(
    config: Pix2PixConfig, pairs: PairSource, *, resume: bool = False
) -> dict[str, Any]:
    """Train pix2pix on the pairs and write ``metrics.json`` (module docs).

    Returns:
        ``kind``, ``data``, ``n_train``, ``config``, ``epochs``, ``iterations``,
        ``train_seconds``, ``final`` (last value of every loss), ``test_l1`` (mean absolute
        error of the translations of the test pairs, [0, 1] scale; with the EMA generator
        when kept), ``n_test``, ``history``, ``checkpoint``.

    Raises:
        PplGenError: bad settings (naming the parameter), missing data, a refused resume.
        TrainingDiverged: a non-finite or exploded loss.
    """
    config.validate()
    pairs.validate()
    if config.out is not None:
        check_output_dir(config.out, "out")
    resolve_device(config.device)
    source, target, _ = pairs.load("train")
    test_source, test_target, _ = pairs.load("test")
    result = train_pix2pix(source, target, config, resume=resume, data_spec=pairs.spec())
    scores = evaluate_translation(result.sampler, test_source.images, test_target.images)
    h = result.history
    metrics = {
        "kind": "pix2pix",
        "data": pairs.spec(),
        "n_train": int(source.images.shape[0]),
        "config": settings_record(config),
        "epochs": result.epochs,
        "iterations": result.iterations,
        "train_seconds": result.seconds,
        "final": {k: v[-1] for k, v in h.items() if k.endswith("_loss") and v},
        "test_l1": scores["l1"],
        "n_test": scores["n_test"],
        "history": h,
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
    }
    if config.out is not None:
        with output_lock(config.out):
            write_json(Path(config.out) / "metrics.json", metrics)
    return metrics


def run_evaluate_pix2pix(state: dict, opts: Any) -> dict[str, Any]:
    """Score a pix2pix checkpoint on its test pairs: per-pixel L1 and label preservation
    under the MNIST judge (:func:`~ppl_gen.metrics.translation.evaluate_translation`);
    writes ``metrics.json`` and ``translations.png`` (rows: source, translation, target)
    into ``opts.out`` when given.

    Args:
        state: the checkpoint.
        opts: a :class:`~ppl_gen.jobs.evaluate_gan.GeneratorEvaluation` (``classifier``,
            ``data_root``, ``bsds_root``, ``n_test``, ``device``, ``out``, ``checkpoint``).

    Raises:
        PplGenError: not a pix2pix checkpoint, no data root, a missing or wrong judge.
    """
    device = resolve_device(opts.device)
    generator = load_pix2pix(state, device)
    spec = state.get("data") or {}
    pairs = PairSource(
        direction=spec.get("direction", "mnistm-to-mnist"),
        data_root=opts.data_root or spec.get("root"),
        bsds_root=opts.bsds_root or spec.get("bsds_root"),
        n_test=opts.n_test,
        seed=int(spec.get("seed", 0)),
    )
    if pairs.data_root is None:
        raise PplGenError("data_root is required: a folder containing MNIST/raw")
    source, target, labels = pairs.load("test")
    classifier = load_classifier(opts.classifier, device)
    scores = evaluate_translation(generator, source.images, target.images, labels, classifier)
    result = {
        "kind": "pix2pix",
        "checkpoint": opts.checkpoint,
        "epoch": state.get("epoch"),
        "direction": pairs.direction,
        **scores,
    }
    if opts.out:
        x = to_tanh_range(source.images[:8]).to(device)
        fake = eval_samples(generator, x, ())
        rows = [to_unit(r).cpu().expand(-1, 3, -1, -1) for r in (x, fake)]
        rows.append(target.images[:8].expand(-1, 3, -1, -1))
        save_sample_grid(torch.cat(rows), Path(opts.out) / "translations.png", nrow=8)
        write_json(Path(opts.out) / "metrics.json", result)
    return result
