"""Curves against epochs or wall time: one plotter (:func:`plot_curves`) and the report's figures.

:func:`plot_curves` draws one or more side-by-side panels of :class:`Curve` lines and saves
the figure atomically; :func:`plot_loss_curves` (training / validation ELBO per epoch and
against wall time) and :func:`plot_objective_vs_time` (every scheme's training objective
against wall time) are built on it.  Non-finite values are drawn as gaps.  Units are the
caller's: the comparison figures use nats per datapoint and seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.ticker import MaxNLocator

from ppl_gen.core.errors import PplGenError
from ppl_gen.viz.figures import PathLike, finite_or_nan, new_figure, save_figure


@dataclass(frozen=True)
class Curve:
    """One line of a panel.

    Attributes:
        y: the values (non-finite ones become gaps).
        x: the abscissae, same length as ``y``; default ``1, 2, ..., len(y)`` (epochs).
        label: legend entry (``None``: not in the legend).
        color: a matplotlib colour (``None``: the axes' colour cycle).
        linestyle: matplotlib line style, e.g. ``"-"`` (default) or ``"--"``.
        marker: matplotlib marker, e.g. ``"."`` (default none).
    """

    y: Sequence[float]
    x: Sequence[float] | None = None
    label: str | None = None
    color: str | None = None
    linestyle: str = "-"
    marker: str | None = None


@dataclass(frozen=True)
class Panel:
    """One axes of :func:`plot_curves`.

    Attributes:
        curves: the lines, drawn in order.
        xlabel, ylabel, title: axis labels and title (empty: none).
        xscale: matplotlib x scale (``"linear"`` default, ``"log"``, ``"symlog"``...), with
            keyword options ``xscale_options`` (e.g. ``{"linthresh": 0.1}``).
        integer_x: integer ticks on the x axis (epochs).
        grid: draw a light grid.  legend: draw the legend (small font).
    """

    curves: Sequence[Curve]
    xlabel: str = ""
    ylabel: str = ""
    title: str = ""
    xscale: str | None = None
    xscale_options: Mapping[str, Any] = field(default_factory=dict)
    integer_x: bool = False
    grid: bool = True
    legend: bool = True


def plot_curves(
    panels: Panel | Sequence[Panel],
    path: PathLike,
    *,
    panel_size: tuple[float, float] = (6.0, 4.5),
    tight_layout: bool = True,
) -> Path:
    """Draw panels of curves side by side (one row) and save the figure atomically.

    Args:
        panels: one :class:`Panel` or a sequence of them (left to right).
        path: destination; the format follows its suffix (PNG when it has none).
        panel_size: ``(width, height)`` of one panel in inches.
        tight_layout: apply matplotlib's tight layout before saving.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        PplGenError: if there is no panel or a curve's ``x`` and ``y`` differ in length.
    """
    panels = [panels] if isinstance(panels, Panel) else list(panels)
    if not panels:
        raise PplGenError("panels must hold at least one Panel")
    fig = new_figure(panel_size[0] * len(panels), panel_size[1])
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        for curve in panel.curves:
            y = finite_or_nan(curve.y)
            x = list(range(1, len(y) + 1)) if curve.x is None else [float(v) for v in curve.x]
            if len(x) != len(y):
                raise PplGenError(f"curve {curve.label!r}: {len(x)} x values but {len(y)} y values")
            style: dict[str, Any] = {"linestyle": curve.linestyle}
            for key in ("label", "color", "marker"):
                if getattr(curve, key) is not None:
                    style[key] = getattr(curve, key)
            ax.plot(x, y, **style)
        if panel.xscale is not None:
            ax.set_xscale(panel.xscale, **panel.xscale_options)
        if panel.xlabel:
            ax.set_xlabel(panel.xlabel)
        if panel.integer_x:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if panel.ylabel:
            ax.set_ylabel(panel.ylabel)
        if panel.title:
            ax.set_title(panel.title)
        if panel.grid:
            ax.grid(True, alpha=0.3)
        if panel.legend:
            ax.legend(fontsize="small")
    if tight_layout:
        fig.tight_layout()
    return save_figure(fig, path)


def _objective_title(names: Sequence[str], step: str) -> str:
    """``"log-likelihood (nats/datapoint) per iteration"``, ``"ELBO per epoch"``, ..."""
    kinds = list(dict.fromkeys(names))
    if kinds == ["log-likelihood"]:
        return f"log-likelihood (nats/datapoint) per {step}"
    return " / ".join(kinds) + f" per {step}"


def plot_loss_curves(curves: Mapping[str, Mapping[str, Any]], path: PathLike) -> Path:
    """Plot each scheme's training objective (and validation ELBO) per step and against time.

    Args:
        curves: ``{scheme_name: {"train_elbo": [...], "val_elbo": [...], "seconds": [...],
            "objective": "ELBO", "step": "epoch"}}``.  ``train_elbo`` (required, non-empty):
            the training objective after each step, nats per datapoint -- the ELBO, or the
            average log-likelihood for EM.  ``val_elbo`` (optional, may be missing or
            empty): per-step validation ELBO, nats per datapoint.  ``seconds`` (optional):
            cumulative wall seconds at the end of each step.  ``objective`` (optional,
            default ``"ELBO"``): the objective's name, e.g. ``"log-likelihood"`` for EM.
            ``step`` (optional, default ``"epoch"``): ``"epoch"`` (SVI) or ``"iteration"``
            (EM, CAVI).  Non-empty ``val_elbo`` and ``seconds`` must have the same length as
            ``train_elbo``.  Non-finite values are drawn as gaps.
        path: destination file; the format follows its suffix (PNG when it has none).

    Returns:
        ``path`` as a :class:`~pathlib.Path`, written atomically.

    The figure has one panel per step kind (objective against epoch or iteration 1..E;
    training solid, validation dashed, one colour per scheme), titled with the real
    objective and units ("log-likelihood (nats/datapoint) per iteration" for EM, "ELBO per
    iteration" for CAVI, "ELBO per epoch" for SVI), and, when at least one scheme gives
    ``seconds``, a last panel against cumulative wall time in seconds (same styles).

    Raises:
        PplGenError: if ``curves`` is empty, a scheme lacks a non-empty ``train_elbo``, a
            ``val_elbo``/``seconds`` list has a different length from ``train_elbo``, or
            ``step`` is not ``epoch`` / ``iteration``.
    """
    if not curves:
        raise PplGenError("curves must name at least one scheme, got an empty mapping")
    series = {}
    for name, curve in curves.items():
        train = list(curve.get("train_elbo") or [])
        if not train:
            raise PplGenError(f"curves[{name!r}]['train_elbo'] must be a non-empty list of ELBOs")
        val = list(curve.get("val_elbo") or [])
        secs = list(curve.get("seconds") or [])
        for key, seq in (("val_elbo", val), ("seconds", secs)):
            if seq and len(seq) != len(train):
                raise PplGenError(
                    f"curves[{name!r}][{key!r}] has {len(seq)} entries but train_elbo has "
                    f"{len(train)} (one per epoch)"
                )
        step = str(curve.get("step") or "epoch")
        if step not in ("epoch", "iteration"):
            raise PplGenError(f"curves[{name!r}]['step'] must be epoch or iteration, got {step!r}")
        objective = str(curve.get("objective") or "ELBO")
        series[name] = (train, val, [float(s) for s in secs], objective, step)

    by_step: dict[str, list[Curve]] = {}
    kinds: dict[str, list[str]] = {}
    by_time: list[Curve] = []
    for i, (name, (train, val, secs, objective, step)) in enumerate(series.items()):
        colour = f"C{i % 10}"
        lines = by_step.setdefault(step, [])
        kinds.setdefault(step, []).append(objective)
        label = f"{name}, {objective}"
        lines.append(Curve(train, label=f"{label} (train)", color=colour))
        if val:
            lines.append(
                Curve(val, label=f"{name}, ELBO (validation)", color=colour, linestyle="--")
            )
        if secs:
            by_time.append(Curve(train, secs, f"{label} (train)", colour))
            if val:
                by_time.append(Curve(val, secs, f"{name}, ELBO (validation)", colour, "--"))
    panels = []
    for step, lines in by_step.items():
        names = kinds[step]
        ylabel = (names[0] if len(set(names)) == 1 else "objective") + " (nats per datapoint)"
        panels.append(Panel(lines, step, ylabel, _objective_title(names, step), integer_x=True))
    if by_time:
        names = [n for ns in kinds.values() for n in ns]
        ylabel = (names[0] if len(set(names)) == 1 else "objective") + " (nats per datapoint)"
        title = " / ".join(dict.fromkeys(names)) + " against wall time"
        panels.append(Panel(by_time, "wall time (seconds)", ylabel, title))
    return plot_curves(panels, path)


def plot_objective_vs_time(
    histories: Mapping[str, tuple[Sequence[float], Sequence[float], str]], path: PathLike
) -> Path:
    """Training objective against wall time, all schemes on one axis.

    Args:
        histories: ``{scheme: (seconds, objective, objective_name)}``; seconds cumulative
            (s), objective in nats per datapoint (log-likelihood for EM, ELBO otherwise).
            A scheme with an empty history is left out.  The time axis is symlog (linear
            below 0.1 s).
        path: PNG destination (written atomically).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        PplGenError: if a scheme's sequences differ in length.
    """
    lines = []
    for scheme, (seconds, objective, kind) in histories.items():
        if len(seconds) != len(objective):
            raise PplGenError(f"histories[{scheme!r}]: seconds and objective differ in length")
        if objective:
            lines.append(Curve(objective, seconds, f"{scheme} ({kind})", marker="."))
    panel = Panel(
        lines,
        "wall time (seconds)",
        "training objective (nats per datapoint)",
        "Objective against wall time",
        xscale="symlog",
        xscale_options={"linthresh": 0.1},
    )
    return plot_curves(panel, path, panel_size=(6.5, 4.0), tight_layout=False)


def plot_iwae_vs_k(
    curves: Mapping[str, Mapping[int, float]],
    references: Mapping[str, tuple[float, str]],
    path: PathLike,
) -> Path:
    """IWAE-K of the test set against K, one line per scheme, with each scheme's reference
    ``log p(x)`` (exact or AIS) as a dashed line of the same colour.

    Args:
        curves: ``{scheme: {K: mean IWAE-K (nats per datapoint)}}``.
        references: ``{scheme: (mean log p(x) (nats per datapoint), "exact" | "ais")}``.
        path: PNG destination (written atomically).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    lines = []
    for i, (scheme, by_k) in enumerate(curves.items()):
        color = f"C{i % 10}"
        ks = sorted(by_k)
        lines.append(Curve([by_k[k] for k in ks], ks, scheme, color=color, marker="."))
        if scheme in references and ks:
            value, method = references[scheme]
            label = f"{scheme}: log p(x) ({method})"
            lines.append(Curve([value, value], [ks[0], ks[-1]], label, color, linestyle="--"))
    panel = Panel(
        lines,
        "K (importance samples per datapoint)",
        "test IWAE-K (nats per datapoint)",
        "IWAE-K against K (Burda et al. 2016, eq. 8)",
        xscale="log",
    )
    return plot_curves(panel, path, panel_size=(6.5, 4.5), tight_layout=False)


__all__ = [
    "Curve",
    "Panel",
    "plot_curves",
    "plot_iwae_vs_k",
    "plot_loss_curves",
    "plot_objective_vs_time",
]
