"""Diagnostics figures: the PSIS k-hat of each test point's importance weights.

Pareto-smoothed importance sampling (Vehtari et al. 2024, "Pareto smoothed importance
sampling", JMLR): a k-hat above 0.7 means the importance-weighted estimate for that point is
unreliable.  Drawn on the pyplot-free canvas of :mod:`ppl_gen.viz.figures`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from ppl_gen.viz.figures import PathLike, new_figure, save_figure


def plot_khat_histogram(khats: Mapping[str, torch.Tensor], path: PathLike) -> Path:
    """Histogram of the PSIS k-hat of each test point's importance weights, per scheme.

    Args:
        khats: ``{scheme: (N,) k-hat}``; ``-inf`` entries (constant weights) are drawn at the
            left edge, ``NaN`` entries (not applicable: few distinct weights) are left out.
            A dashed line marks the 0.7 reliability threshold.
        path: PNG destination (written atomically).
    """
    fig = new_figure(6.5, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    finite = [k[torch.isfinite(k)] for k in khats.values()]
    lo = min([float(k.min()) for k in finite if k.numel()] + [-0.5])
    hi = max([float(k.max()) for k in finite if k.numel()] + [1.0])
    bins = torch.linspace(lo - 0.05, hi + 0.05, 31).tolist()
    for scheme, k in khats.items():
        values = k.clone().double()
        values = values[~torch.isnan(values)]  # NaN: k-hat not applicable (discrete proposal)
        if not values.numel():
            ax.plot([], [], label=f"{scheme} (k̂ not applicable)")
            continue
        values[~torch.isfinite(values)] = bins[0]
        ax.hist(values.numpy(), bins=bins, histtype="step", linewidth=1.5, label=scheme)
    ax.axvline(0.7, linestyle="--", color="black", linewidth=1)
    ax.set_xlabel("PSIS k-hat of the importance weights (per test point)")
    ax.set_ylabel("test points")
    ax.legend(fontsize="small")
    return save_figure(fig, path)


__all__ = ["plot_khat_histogram"]
