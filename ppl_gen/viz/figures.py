"""Pyplot-free matplotlib figures, saved atomically: the canvas every ppl_gen plot draws on.

Figures are :class:`matplotlib.figure.Figure` objects built directly, never through
:mod:`matplotlib.pyplot`, so there is no global figure registry, no interactive backend and
nothing to leak between calls; PNG rendering uses the non-interactive Agg canvas attached to
each figure (no backend is ever selected).  :func:`save_figure` writes through
:func:`ppl_gen.core.io.save_with`, so a crash mid-write never leaves a half-written file
(the previous version stays intact).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ppl_gen.core.io import save_with

PathLike = str | os.PathLike

#: Dots per inch of every figure and saved file.
DPI = 100


def new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure of ``width x height`` inches with an Agg canvas attached (so
    ``savefig`` needs no backend)."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: PathLike) -> Path:
    """Save ``fig`` atomically at ``path`` (format from the suffix, PNG if none), then clear it.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    try:
        return save_with(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=DPI))
    finally:
        # Figures made without pyplot are not registered anywhere; clearing releases the
        # artists at once instead of waiting for garbage collection.
        fig.clear()


def finite_or_nan(values: Sequence[float]) -> list[float]:
    """Floats with non-finite entries (a diverged epoch) turned into NaN, drawn as gaps."""
    out = []
    for v in values:
        f = float(v)
        out.append(f if math.isfinite(f) else math.nan)
    return out


__all__ = ["DPI", "PathLike", "finite_or_nan", "new_figure", "save_figure"]
