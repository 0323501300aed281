"""Figures of the adversarial trainers: sample grids (torchvision ``make_grid`` /
``save_image``) and loss curves (matplotlib), written atomically.

Nothing here selects a matplotlib backend: the loss curves are drawn on a pyplot-free
:class:`matplotlib.figure.Figure` with an Agg canvas attached, as in
:mod:`ppl_gen.viz.report`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torchvision.utils import save_image

from ppl_gen.core.io import save_with


def save_sample_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8) -> Path:
    """Save ``images: (B, C, H, W)`` in [0, 1] as one PNG grid with ``nrow`` per row."""
    images = images.detach().float().cpu().clamp(0, 1)
    return save_with(
        path,
        lambda tmp: save_image(images, tmp, format="png", nrow=nrow, padding=2, pad_value=1.0),
    )


def plot_gan_losses(history: Mapping[str, Sequence[float]], path: str | os.PathLike) -> Path:
    """Plot every ``*_loss`` series of ``history`` (one value per epoch) against the epoch.

    Args:
        history: e.g. ``{"epoch": [...], "d_loss": [...], "g_loss": [...]}``.
        path: PNG destination.
    """
    # matplotlib is imported here so that importing the trainers stays cheap.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    epochs = list(history.get("epoch", []))
    for key, values in history.items():
        if key.endswith("_loss") and len(values):
            ax.plot(epochs or range(1, len(values) + 1), list(values), marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean loss per batch")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        return save_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        fig.clear()
