"""Figures of domain adaptation: t-SNE maps of source and target features before and
after adaptation (Ganin et al. JMLR 2016, fig. 4) and the per-epoch training curves of DANN
runs.  Both are drawn on a :class:`matplotlib.figure.Figure` (no backend is selected) and
written atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ppl_gen.core.io import save_with


def plot_tsne(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | os.PathLike,
    domain_names: tuple[str, str] = ("source", "target"),
) -> Path:
    """Draw t-SNE maps side by side (one per entry of ``panels``, e.g. ``"before
    adaptation"`` / ``"after adaptation"``), points coloured by domain; written atomically.

    Args:
        panels: title → ``(points (n, 2), domain (n,))`` from :func:`tsne_embedding`.
        path: output image (``.png``).
        domain_names: legend names of domain 0 and 1.
    """
    fig = Figure(figsize=(4.5 * len(panels), 4.5))
    for i, (title, (points, domain)) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for d, colour in ((0, "tab:blue"), (1, "tab:red")):
            sel = domain == d
            ax.scatter(
                points[sel, 0], points[sel, 1], s=3, c=colour, alpha=0.5, label=domain_names[d]
            )
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(loc="upper right", markerscale=4, fontsize=8)
    fig.tight_layout()
    return save_with(path, lambda tmp: fig.savefig(tmp, dpi=110))


def plot_history(histories: Mapping[str, Mapping[str, Sequence]], path: str | os.PathLike) -> Path:
    """Per-epoch training curves of DANN runs: label loss (nats per source image), domain
    loss (nats per image) and domain-classifier accuracy, one line per run; written
    atomically.

    Args:
        histories: run name → :attr:`DANNResult.history` (``None`` entries are skipped).
        path: output image (``.png``).
    """
    fig = Figure(figsize=(13.5, 4.0))
    panels = (
        ("label_loss", "label loss (nats)"),
        ("domain_loss", "domain loss (nats)"),
        ("domain_accuracy", "domain classifier accuracy"),
    )
    for i, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        for name, history in histories.items():
            pairs = [
                (e, v) for e, v in zip(history["epoch"], history[key], strict=True) if v is not None
            ]
            if pairs:
                ax.plot(*zip(*pairs, strict=True), marker=".", label=name)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        if key == "domain_accuracy":
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_with(path, lambda tmp: fig.savefig(tmp, dpi=100))
