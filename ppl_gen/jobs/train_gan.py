"""The ``ppl-gen train gan|dcgan|cgan|cyclegan`` jobs: load the images, train
(:func:`ppl_gen.gan.trainer.train_gan` / :func:`ppl_gen.gan.cycle_trainer.train_cyclegan`,
which write ``checkpoint.pt``, ``samples_epoch_NNN.png`` and ``loss_curves.png`` per epoch)
and write ``metrics.json`` into ``out``.

Under ``torchrun`` every rank runs the job; rank 0 alone writes.  Paths in the data
description stored with the checkpoint (``root``, ``bsds_root``) are made absolute, so
``ppl-gen evaluate`` finds the same data from any working directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppl_gen.core.distributed import DistributedContext, init_from_env
from ppl_gen.core.io import check_output_dir, output_lock, write_json
from ppl_gen.data.images import ImageData, load_images, with_channels
from ppl_gen.engine.state import settings_record
from ppl_gen.gan.cycle_trainer import CycleGANConfig, train_cyclegan
from ppl_gen.gan.trainer import GANConfig, train_gan


def _absolute(path: str | os.PathLike | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


@dataclass
class ImageSource:
    """Where a job's training images come from (:func:`ppl_gen.data.images.load_images`).

    Attributes:
        name: ``mnist``, ``digits``, ``mnistm`` or a folder of images.
        root: MNIST folder (``mnist`` / ``mnistm``).
        bsds_root: photographs for ``mnistm``.
        n: a seeded random subset of ``n`` images (``None``: all).
        seed: seed of that subset (and of MNIST-M's build).
        channels: force 1 or 3 channels (``None``: as stored).
    """

    name: str
    root: str | None = None
    bsds_root: str | None = None
    n: int | None = None
    seed: int = 0
    channels: int | None = None

    def load(self) -> ImageData:
        """The images (CPU).

        Raises:
            PplGenError: unknown data, missing folders, a bad ``n`` or ``channels``.
        """
        return load_images(
            self.name,
            self.root,
            n=self.n,
            seed=self.seed,
            bsds_root=self.bsds_root,
            channels=self.channels,
        )

    def spec(self, channels: int | None = None) -> dict[str, Any]:
        """The JSON-able description stored in the checkpoint (``data``), with absolute
        paths; ``channels`` overrides the stored channel count."""
        name = self.name if self.name in ("mnist", "digits", "mnistm") else _absolute(self.name)
        return {
            "name": name,
            "root": _absolute(self.root),
            "bsds_root": _absolute(self.bsds_root),
            "n": self.n,
            "seed": self.seed,
            "channels": self.channels if channels is None else channels,
        }


def _last(history: dict, key: str) -> Any:
    values = history.get(key) or []
    return values[-1] if values else None


def run_train_gan(
    config: GANConfig,
    source: ImageSource,
    *,
    resume: bool = False,
    dist: DistributedContext | None = None,
) -> dict[str, Any]:
    """Train a GAN, DCGAN or conditional GAN and write ``metrics.json`` (module docs).

    Args:
        config: the trainer's settings (``config.out``: the output folder, or ``None`` to
            write nothing).
        source: the training images.
        resume: continue from ``config.out/checkpoint.pt`` when it exists.
        dist: the data-parallel context (default :func:`ppl_gen.core.distributed.init_from_env`).

    Returns:
        The summary written to ``metrics.json`` (``kind``, ``data``, ``n_train``,
        ``image_shape``, ``config``, ``epochs``, ``iterations``, ``train_seconds``,
        ``images_per_second``, ``final_d_loss``, ``final_g_loss``, ``history``, ``warnings``,
        ``checkpoint``, ``processes``); the same on every rank.

    Raises:
        PplGenError: a bad setting (naming the parameter), missing data, a refused resume.
        TrainingDiverged: a non-finite or exploded loss.
    """
    config.validate()
    if config.out is not None:
        check_output_dir(config.out, "out")
    ctx = dist if dist is not None else init_from_env(config.device)
    images = source.load()
    spec = source.spec()
    result = train_gan(images, config, resume=resume, data_spec=spec, dist=ctx)
    h = result.history
    metrics = {
        "kind": config.model,
        "data": spec,
        "n_train": int(images.images.shape[0]),
        "image_shape": list(images.image_shape),
        "config": settings_record(config),
        "epochs": result.epochs,
        "iterations": result.iterations,
        "train_seconds": result.seconds,
        "images_per_second": _last(h, "images_per_second"),
        "final_d_loss": _last(h, "d_loss"),
        "final_g_loss": _last(h, "g_loss"),
        "history": h,
        "warnings": result.warnings,
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "processes": ctx.world_size,
    }
    if ctx.is_main and config.out is not None:  # rank 0 alone writes
        with output_lock(config.out):
            write_json(Path(config.out) / "metrics.json", metrics)
    return metrics


def run_train_cyclegan(
    config: CycleGANConfig,
    source_a: ImageSource,
    source_b: ImageSource,
    *,
    match_channels: bool = True,
    resume: bool = False,
    dist: DistributedContext | None = None,
) -> dict[str, Any]:
    """Train CycleGAN between two image sets and write ``metrics.json`` (module docs).

    Args:
        config: the trainer's settings (``config.out``: the output folder or ``None``).
        source_a, source_b: the two domains.
        match_channels: give a grey domain 3 channels when the other is colour (so the
            identity loss applies).
        resume: continue from ``config.out/checkpoint.pt`` when it exists.
        dist: the data-parallel context.

    Returns:
        The summary written to ``metrics.json`` (``kind``, ``data``, ``image_shapes``,
        ``config``, ``epochs``, ``iterations``, ``train_seconds``, ``images_per_second``,
        ``final`` (last value of every loss), ``history``, ``checkpoint``, ``processes``).

    Raises:
        PplGenError: a bad setting, missing data, domains that do not fit, a refused resume.
        TrainingDiverged: a non-finite or exploded loss.
    """
    config.validate()
    if config.out is not None:
        check_output_dir(config.out, "out")
    ctx = dist if dist is not None else init_from_env(config.device)
    a, b = source_a.load(), source_b.load()
    if match_channels and a.image_shape[0] != b.image_shape[0]:
        a, b = with_channels(a, 3), with_channels(b, 3)
    spec = {"a": source_a.spec(a.image_shape[0]), "b": source_b.spec(b.image_shape[0])}
    result = train_cyclegan(a, b, config, resume=resume, data_spec=spec, dist=ctx)
    h = result.history
    metrics = {
        "kind": "cyclegan",
        "data": spec,
        "image_shapes": [list(a.image_shape), list(b.image_shape)],
        "config": settings_record(config),
        "epochs": result.epochs,
        "iterations": result.iterations,
        "train_seconds": result.seconds,
        "images_per_second": _last(h, "images_per_second"),
        "final": {k: v[-1] for k, v in h.items() if k.endswith("_loss") and v},
        "history": h,
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "processes": ctx.world_size,
    }
    if ctx.is_main and config.out is not None:
        with output_lock(config.out):
            write_json(Path(config.out) / "metrics.json", metrics)
    return metrics
