"""The ``ppl-gen train stylegan`` job: train the style-based generator
(:mod:`ppl_gen.gan.stylegan`, through :func:`ppl_gen.jobs.train_gan.run_train_gan`, which
writes ``checkpoint.pt``, ``samples_epoch_NNN.png``, ``loss_curves.png`` and
``metrics.json``), then the style-mixing figure ``style_mixing.png`` (Karras et al. 2019,
fig. 3): row ``r`` takes its coarse styles (the 7x7 layers) from code ``z_r`` (its image in
the first column), column ``c`` its fine styles (14x14 and 28x28 layers) from code ``z'_c``
(its image in the first row).  The figure uses the generator that samples use (the EMA one
with ``ema``), with the eval-mode constant noise, and is written atomically by rank 0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ppl_gen.core.checkpoint import load_checkpoint
from ppl_gen.core.distributed import DistributedContext, init_from_env
from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.core.io import output_lock, write_json
from ppl_gen.gan.stylegan import StyleGenerator, style_mixing_grid
from ppl_gen.gan.trainer import GANConfig, load_generator
from ppl_gen.jobs.train_gan import ImageSource, run_train_gan
from ppl_gen.viz.gan import save_sample_grid

STYLE_MIXING_FILE = "style_mixing.png"


def write_style_mixing_figure(
    generator: StyleGenerator,
    path: str | os.PathLike,
    n_rows: int = 6,
    n_cols: int = 6,
    seed: int = 0,
    crossover: int | None = None,
) -> Path:
    """Draw ``n_rows`` coarse codes and ``n_cols`` fine codes (``z ~ N(0, I)`` from a CPU
    generator seeded with ``seed``) and save their style-mixing grid
    (:func:`~ppl_gen.gan.stylegan.style_mixing_grid`) as one PNG, atomically.

    Raises:
        PplGenError: ``n_rows`` / ``n_cols`` not positive integers.
    """
    require_positive_int("n_rows", n_rows)
    require_positive_int("n_cols", n_cols)
    g = torch.Generator().manual_seed(seed)
    device = next(generator.parameters()).device
    z_coarse = torch.randn(n_rows, generator.latent_dim, generator=g).to(device)
    z_fine = torch.randn(n_cols, generator.latent_dim, generator=g).to(device)
    grid = style_mixing_grid(generator, z_coarse, z_fine, crossover)
    return save_sample_grid(grid, path, nrow=n_cols + 1)


def run_train_stylegan(
    config: GANConfig,
    source: ImageSource,
    *,
    resume: bool = False,
    dist: DistributedContext | None = None,
) -> dict[str, Any]:
    """Train the style-based generator and write the style-mixing figure (module docs).

    Returns:
        The metrics of :func:`~ppl_gen.jobs.train_gan.run_train_gan` with ``style_mixing``
        (the figure's path, or ``None`` without ``config.out``).

    Raises:
        PplGenError: ``config.model`` other than ``stylegan``, or as ``run_train_gan``.
        TrainingDiverged: a non-finite or exploded loss.
    """
    if config.model != "stylegan":
        raise PplGenError(f"model must be stylegan for this job, got {config.model!r}")
    ctx = dist if dist is not None else init_from_env(config.device)
    metrics = run_train_gan(config, source, resume=resume, dist=ctx)
    metrics["style_mixing"] = None
    if ctx.is_main and config.out is not None:
        out = Path(config.out)
        generator = load_generator(load_checkpoint(out / "checkpoint.pt"), ctx.device)
        path = write_style_mixing_figure(generator, out / STYLE_MIXING_FILE, seed=config.seed)
        metrics["style_mixing"] = str(path)
        with output_lock(out):
            write_json(out / "metrics.json", metrics)
    return metrics
