"""Training curves of the autoencoders (reconstruction loss per epoch), written atomically."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ppl_gen.core.io import save_with


def plot_training_curves(
    history: Mapping[str, Sequence[float | None]], path: str | os.PathLike, units: str
) -> Path:
    """Plot ``train_loss``, ``train_reconstruction`` and ``val_reconstruction`` per epoch.

    Args:
        history: :attr:`AutoencoderTrainResult.history`.
        path: PNG destination.
        units: y-axis units, e.g. ``"nats per datapoint"``.
    """
    fig = Figure(figsize=(6.5, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    epochs = list(history.get("epoch") or range(1, len(history["train_loss"]) + 1))
    styles = {
        "train_loss": ("training objective", "-"),
        "train_reconstruction": ("training reconstruction", ":"),
        "val_reconstruction": ("validation reconstruction", "--"),
    }
    for key, (label, style) in styles.items():
        values = [math.nan if v is None else float(v) for v in history.get(key) or []]
        if values and len(values) == len(epochs):
            ax.plot(epochs, values, linestyle=style, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"loss ({units})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    try:
        return save_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        fig.clear()
