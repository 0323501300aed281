"""Figures and arrays of the latent tools, written atomically.

Image grids go through :mod:`ppl_gen.viz.report` (torchvision ``make_grid``); scatter plots
are matplotlib figures built without :mod:`matplotlib.pyplot`; arrays are saved with
``numpy.savez`` (one ``.npz`` per tool run).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ppl_gen.core.io import save_with


def save_arrays(path: str | os.PathLike, **arrays) -> Path:
    """Save tensors / arrays as one ``.npz`` (atomically); tensors are moved to CPU."""

    def as_numpy(v):
        return v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v)

    data = {k: as_numpy(v) for k, v in arrays.items() if v is not None}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **data)

    return save_with(path, write)


def save_scatter(
    points: np.ndarray,
    labels: np.ndarray | torch.Tensor | None,
    path: str | os.PathLike,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
) -> Path:
    """Scatter plot of ``points: (N, 2)`` coloured by integer ``labels: (N,)`` (one colour
    and legend entry per label; grey without labels), saved atomically as PNG."""
    fig = Figure(figsize=(6.5, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    points = np.asarray(points)
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=6, c="0.4", alpha=0.7)
    else:
        labels = np.asarray(torch.as_tensor(labels).cpu()).reshape(-1)
        for i, lab in enumerate(np.unique(labels)):
            sel = labels == lab
            ax.scatter(
                points[sel, 0], points[sel, 1], s=6, alpha=0.7, color=f"C{i % 10}", label=str(lab)
            )
        ax.legend(markerscale=3, fontsize="small", title="label", loc="best")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    try:
        return save_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        fig.clear()
