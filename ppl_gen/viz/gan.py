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
from torchvision.utils import make_grid, save_image

from ppl_gen.core.errors import PplGenError
from ppl_gen.core.io import save_with

#: Row labels of a CycleGAN translation panel (``translation_panel``): real A, its
#: translation, its reconstruction, then the same from B.
TRANSLATION_ROWS = ("A", "A→B", "A→B→A", "B", "B→A", "B→A→B")


def save_sample_grid(
    images: torch.Tensor,
    path: str | os.PathLike,
    nrow: int = 8,
    row_labels: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Save ``images: (B, C, H, W)`` in [0, 1] as one PNG grid with ``nrow`` per row.

    Args:
        images: the batch, row-major.
        path: PNG destination (written atomically).
        nrow: images per grid row.
        row_labels: optional label of each grid row (e.g. ``"class 3"`` for a conditional
            GAN, ``"A"``, ``"A→B"``, ``"A→B→A"`` for CycleGAN), drawn left of the row;
            without labels (and title) the grid is written by torchvision's ``save_image``.
        title: optional figure title (drawn only with ``row_labels`` or on its own).

    Raises:
        PplGenError: more row labels than grid rows.
    """
    images = images.detach().float().cpu().clamp(0, 1)
    if not row_labels and not title:
        return save_with(
            path,
            lambda tmp: save_image(images, tmp, format="png", nrow=nrow, padding=2, pad_value=1.0),
        )
    from ppl_gen.viz.figures import new_figure, save_figure

    rows = -(-images.shape[0] // nrow)
    labels = list(row_labels or [])
    if len(labels) > rows:
        raise PplGenError(f"row_labels: {len(labels)} labels for a grid of {rows} rows")
    grid = make_grid(images, nrow=nrow, padding=2, pad_value=1.0)
    h, w = grid.shape[1:]
    scale = min(max(1.5 / 100, 3.0 / max(h, w)), 10.0 / max(h, w))
    width = w * scale + (1.0 if labels else 0.3)
    fig = new_figure(width, h * scale + (0.7 if title else 0.3))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    cell = (h - 2) / rows
    ax.set_yticks([2 + cell * (i + 0.5) for i in range(len(labels))], labels)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize="medium")
    fig.tight_layout()
    return save_figure(fig, path)


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
