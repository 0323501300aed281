"""Shared by the GAN quality benchmarks: train one GAN in stages and hand back the
generator after each evaluation epoch (one run, resumed from its checkpoint)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence

from plain_vae import REPO
from torch import nn

from ppl_gen.core.checkpoint import load_checkpoint
from ppl_gen.data.images import ImageData
from ppl_gen.gan.trainer import GANConfig, load_generator, train_gan


def benchmark_config(model: str, epochs: int, name: str) -> GANConfig:
    """The benchmarks' GAN settings for ``model`` (``"dcgan"`` or ``"cgan"``): ngf = ndf =
    32, z of 64, vanilla loss, batch 64, seed 0, CPU, outputs in ``runs/<name>`` (emptied)."""
    out = REPO / "runs" / name
    shutil.rmtree(out, ignore_errors=True)
    return GANConfig(
        model=model,
        latent_dim=64,
        ngf=32,
        ndf=32,
        epochs=epochs,
        batch_size=64,
        device="cpu",
        progress=False,
        out=str(out),
        seed=0,
    )


def train_in_stages(
    data: ImageData, config: GANConfig, eval_at: Sequence[int]
) -> Iterator[tuple[int, object, nn.Module]]:
    """Train one run up to each epoch in sorted ``eval_at`` (resuming from its checkpoint),
    yielding ``(epoch, train result, generator)`` after each."""
    done = 0
    for epoch in eval_at:
        result = train_gan(data, config, resume=True, stop_after=epoch - done)
        done = epoch
        checkpoint = load_checkpoint(f"{config.out}/checkpoint.pt")
        yield epoch, result, load_generator(checkpoint, "cpu")
