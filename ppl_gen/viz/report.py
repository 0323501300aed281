"""Figures and the markdown report of a comparison run (``ppl-gen compare``).

Everything here draws on :class:`matplotlib.figure.Figure` objects built directly, never
through :mod:`matplotlib.pyplot`, so there is no global figure registry, no interactive
backend and nothing to leak between calls; PNG rendering uses the non-interactive Agg
canvas.  Every file goes through :func:`ppl_gen.core.io.save_with` or
:func:`ppl_gen.core.io.write_text`, so a crash mid-write never leaves a half-written figure or
report (the previous version stays intact).

Units: every bound is in nats per datapoint (a natural-log likelihood bound averaged over
datapoints); wall time is in seconds.  Images are float tensors with values in [0, 1].

Sources:
    * Kingma & Welling (2014), "Auto-Encoding Variational Bayes", ICLR, fig. 4: the 2-D
      latent manifold drawn through the inverse Gaussian CDF of a regular grid on the unit
      square.
    * Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders", ICLR: the
      IWAE-K bound is never below the ELBO (in expectation) and tightens as K grows.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torchvision.utils import make_grid

from ppl_gen.core.device import resolve_device
from ppl_gen.core.errors import PplGenError
from ppl_gen.core.io import save_with, write_text

__all__ = [
    "format_metrics_table",
    "image_grid",
    "latent_manifold_grid",
    "plot_loss_curves",
    "save_image_panels",
    "save_manifold",
    "save_reconstructions",
    "write_report",
]

PathLike = str | os.PathLike

_PADDING = 2
_PAD_VALUE = 1.0
_DPI = 100
_NA = "n/a"


# ----------------------------------------------------------------------------- helpers


def _new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure with an Agg canvas attached (so ``savefig`` needs no backend)."""
    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig: Figure, path: PathLike) -> Path:
    """Save ``fig`` atomically at ``path`` (format from the suffix, PNG if none), then close it."""
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    try:
        return save_with(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=_DPI))
    finally:
        # Figures made without pyplot are not registered anywhere; clearing releases the
        # artists at once instead of waiting for garbage collection.
        fig.clear()


def _check_image_shape(image_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in image_shape)
    except (TypeError, ValueError):
        raise PplGenError(
            f"image_shape must be a tuple of positive integers, got {image_shape!r}"
        ) from None
    if not 1 <= len(shape) <= 3 or any(s < 1 for s in shape):
        raise PplGenError(
            "image_shape must be (D,), (H, W) or (C, H, W) with positive sizes, "
            f"got {image_shape!r}"
        )
    if len(shape) == 3 and shape[0] not in (1, 3):
        raise PplGenError(
            f"image_shape (C, H, W) must have C = 1 (grey) or 3 (RGB) channels, got C = {shape[0]}"
        )
    return shape


def _check_nrow(nrow: int | None) -> None:
    if nrow is not None and (isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1):
        raise PplGenError(f"nrow must be a positive integer or None, got {nrow!r}")


def _grid_to_hwc(grid: torch.Tensor):
    """(3, H, W) grid in [0, 1] -> (H, W, 3) numpy array for ``imshow``."""
    return grid.permute(1, 2, 0).numpy()


def _panel_inches(
    grid: torch.Tensor, scale: float = 1.5, strips: bool = False
) -> tuple[float, float]:
    """Size in inches for one grid panel.

    Images keep their aspect ratio: about ``scale`` inches per 100 pixels, with the longer
    side held between 2.5 and 12 inches.  Strips (1 x D vectors, drawn with
    ``aspect="auto"``) get 2.5 to 6 inches of width and 0.12 inches per strip row.
    """
    _, h, w = grid.shape
    if strips:
        rows = (h - _PADDING) // (1 + _PADDING)
        width = min(max(w * scale / _DPI, 2.5), 6.0)
        return width, min(max(0.12 * rows + 0.2, 0.6), 8.0)
    longest = max(h, w)
    inches_per_px = min(max(scale / _DPI, 2.5 / longest), 12.0 / longest)
    return max(w * inches_per_px, 0.6), max(h * inches_per_px, 0.6)


def _show_grid(ax, grid: torch.Tensor, strips: bool) -> None:
    ax.imshow(
        _grid_to_hwc(grid),
        vmin=0.0,
        vmax=1.0,
        interpolation="nearest",
        aspect="auto" if strips else "equal",
    )
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _finite_or_nan(values: Sequence[float]) -> list[float]:
    """Floats with non-finite entries (a diverged epoch) turned into NaN, drawn as gaps."""
    out = []
    for v in values:
        f = float(v)
        out.append(f if math.isfinite(f) else math.nan)
    return out


# ----------------------------------------------------------------------------- loss curves


def plot_loss_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], path: PathLike) -> Path:
    """Plot training and validation ELBO per epoch (and against wall time) for each scheme.

    Args:
        curves: ``{scheme_name: {"train_elbo": [...], "val_elbo": [...], "seconds": [...]}}``.
            ``train_elbo`` (required, non-empty): per-epoch mean training ELBO, nats per
            datapoint.  ``val_elbo`` (optional, may be missing or empty): per-epoch
            validation ELBO, nats per datapoint.  ``seconds`` (optional): cumulative wall
            seconds at the end of each epoch.  Non-empty ``val_elbo`` and ``seconds`` must
            have the same length as ``train_elbo``.  Non-finite values are drawn as gaps.
        path: destination file; the format follows its suffix (PNG when it has none).

    Returns:
        ``path`` as a :class:`~pathlib.Path`, written atomically.

    The figure has a left panel (ELBO against epoch 1..E; training solid, validation
    dashed, one colour per scheme) and, when at least one scheme gives ``seconds``, a right
    panel (ELBO against cumulative wall time in seconds, same styles).

    Raises:
        PplGenError: if ``curves`` is empty, a scheme lacks a non-empty ``train_elbo``, or a
            ``val_elbo``/``seconds`` list has a different length from ``train_elbo``.
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
        series[name] = (_finite_or_nan(train), _finite_or_nan(val), [float(s) for s in secs])

    timed = any(secs for _, _, secs in series.values())
    ncols = 2 if timed else 1
    fig = _new_figure(6.0 * ncols, 4.5)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    ylabel = "ELBO (nats per datapoint)"
    for i, (name, (train, val, secs)) in enumerate(series.items()):
        colour = f"C{i % 10}"
        epochs = list(range(1, len(train) + 1))
        axes[0].plot(epochs, train, color=colour, linestyle="-", label=f"{name} (train)")
        if val:
            axes[0].plot(epochs, val, color=colour, linestyle="--", label=f"{name} (validation)")
        if timed and secs:
            axes[1].plot(secs, train, color=colour, linestyle="-", label=f"{name} (train)")
            if val:
                axes[1].plot(secs, val, color=colour, linestyle="--", label=f"{name} (validation)")
    axes[0].set_xlabel("epoch")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel(ylabel)
    axes[0].set_title("ELBO per epoch")
    if timed:
        axes[1].set_xlabel("wall time (seconds)")
        axes[1].set_ylabel(ylabel)
        axes[1].set_title("ELBO against wall time")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return _save_figure(fig, path)


# ----------------------------------------------------------------------------- image grids


def image_grid(
    images: torch.Tensor, image_shape: Sequence[int], nrow: int | None = None
) -> torch.Tensor:
    """Tile images into one RGB grid with :func:`torchvision.utils.make_grid`.

    Args:
        images: ``(n, D)`` flattened, with ``D = prod(image_shape)``, or ``(n, *image_shape)``;
            values in [0, 1] (clamped; NaN drawn as 0; ``uint8`` is divided by 255).  Any
            device; gradients are not tracked.
        image_shape: ``(D,)`` for generic vectors, each drawn as a 1 x D strip;
            ``(H, W)`` for grey images; ``(C, H, W)`` with C = 1 (grey) or 3 (RGB).
        nrow: images per grid row; default ``ceil(sqrt(n))`` for images and 1 for strips
            (one vector per row).

    Returns:
        A ``(3, H', W')`` float CPU tensor in [0, 1], with 2 pixels of white padding
        (``pad_value`` 1.0) around every image, also when ``n == 1``.

    Raises:
        PplGenError: on an empty batch, an unsupported ``image_shape``, a shape that does not
            match ``images``, or an invalid ``nrow``.
    """
    shape = _check_image_shape(image_shape)
    _check_nrow(nrow)
    if not isinstance(images, torch.Tensor):
        raise PplGenError(f"images must be a torch.Tensor, got {type(images).__name__}")
    d = math.prod(shape)
    if images.dim() < 2 or images.shape[0] < 1:
        raise PplGenError(
            f"images must be (n, {d}) or (n, *{shape}) with n >= 1, got {tuple(images.shape)}"
        )
    n = images.shape[0]
    if not (tuple(images.shape[1:]) == shape or tuple(images.shape[1:]) == (d,)):
        raise PplGenError(
            f"images of shape {tuple(images.shape)} do not match image_shape {shape}: "
            f"expected (n, {d}) or (n, *{shape})"
        )
    x = images.detach().to("cpu")
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    x = torch.nan_to_num(x, nan=0.0).clamp(0.0, 1.0)
    if len(shape) == 1:
        x = x.reshape(n, 1, 1, shape[0])
        default_nrow = 1
    elif len(shape) == 2:
        x = x.reshape(n, 1, *shape)
        default_nrow = math.ceil(math.sqrt(n))
    else:
        x = x.reshape(n, *shape)
        default_nrow = math.ceil(math.sqrt(n))
    grid = make_grid(
        x, nrow=nrow or default_nrow, padding=_PADDING, pad_value=_PAD_VALUE, normalize=False
    )
    if n == 1:  # make_grid returns a lone image unpadded; keep the padding uniform
        grid = F.pad(grid, (_PADDING,) * 4, value=_PAD_VALUE)
    return grid


def save_image_panels(
    panels: Mapping[str, torch.Tensor],
    image_shape: Sequence[int],
    path: PathLike,
    *,
    nrow: int | None = None,
    title: str = "",
) -> Path:
    """Save one row of image grids side by side, one per panel (e.g. samples per scheme).

    Args:
        panels: ``{label: images}``; each ``images`` is ``(n_i, D)`` or
            ``(n_i, *image_shape)`` in [0, 1], drawn with :func:`image_grid`; the label is the
            panel title.
        image_shape: as for :func:`image_grid`.
        path: destination file (PNG unless its suffix says otherwise).
        nrow: images per grid row in every panel (default as in :func:`image_grid`).
        title: optional figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`, written atomically.

    Raises:
        PplGenError: if ``panels`` is empty or any panel is rejected by :func:`image_grid`.
    """
    if not panels:
        raise PplGenError("panels must hold at least one {label: images} entry")
    shape = _check_image_shape(image_shape)
    grids = {label: image_grid(imgs, shape, nrow) for label, imgs in panels.items()}
    sizes = [_panel_inches(g, strips=len(shape) == 1) for g in grids.values()]
    width = sum(w for w, _ in sizes) + 0.3 * len(sizes)
    height = max(h for _, h in sizes) + (0.9 if title else 0.5)
    fig = _new_figure(width, height)
    axes = fig.subplots(1, len(grids), squeeze=False)[0]
    for ax, (label, grid) in zip(axes, grids.items(), strict=True):
        _show_grid(ax, grid, strips=len(shape) == 1)
        ax.set_title(str(label))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save_figure(fig, path)


def save_reconstructions(
    originals: torch.Tensor,
    reconstructions: Mapping[str, torch.Tensor],
    image_shape: Sequence[int],
    path: PathLike,
) -> Path:
    """Save originals and each scheme's reconstructions of them, one labelled row each.

    Args:
        originals: ``(n, D)`` (or ``(n, *image_shape)``) test images in [0, 1].
        reconstructions: ``{scheme: (n, D)}``, e.g. the decoder mean at the guide's mean
            latent, same ``n`` and order as ``originals``.
        image_shape: as for :func:`image_grid`.
        path: destination file (PNG unless its suffix says otherwise).

    Returns:
        ``path`` as a :class:`~pathlib.Path`, written atomically.  The first row holds the
        originals, then one row per scheme in mapping order, ``n`` images per row.

    Raises:
        PplGenError: if a reconstruction batch has a different ``n`` from ``originals`` or
            any batch is rejected by :func:`image_grid`.
    """
    shape = _check_image_shape(image_shape)
    if not isinstance(originals, torch.Tensor) or originals.dim() < 2:
        raise PplGenError("originals must be an (n, D) tensor")
    n = originals.shape[0]
    rows = {"original": originals}
    for scheme, recon in reconstructions.items():
        if not isinstance(recon, torch.Tensor) or recon.dim() < 2 or recon.shape[0] != n:
            got = tuple(recon.shape) if isinstance(recon, torch.Tensor) else type(recon).__name__
            raise PplGenError(
                f"reconstructions[{scheme!r}] must hold {n} images like originals, got {got}"
            )
        rows[str(scheme)] = recon
    grids = {label: image_grid(imgs, shape, nrow=n) for label, imgs in rows.items()}
    panel_w, panel_h = _panel_inches(next(iter(grids.values())), strips=len(shape) == 1)
    fig = _new_figure(panel_w + 1.2, (panel_h + 0.15) * len(grids) + 0.3)
    axes = fig.subplots(len(grids), 1, squeeze=False)[:, 0]
    for ax, (label, grid) in zip(axes, grids.items(), strict=True):
        _show_grid(ax, grid, strips=len(shape) == 1)
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return _save_figure(fig, path)


# ----------------------------------------------------------------------------- latent manifold


def latent_manifold_grid(
    decode: Callable[[torch.Tensor], torch.Tensor],
    n: int = 20,
    *,
    device: str | torch.device = "cpu",
    lo: float = 0.05,
    hi: float = 0.95,
) -> torch.Tensor:
    """Decode an n x n grid of a 2-D latent space (Kingma & Welling 2014, fig. 4).

    Coordinates ``u_0 < ... < u_{n-1}`` are linearly spaced on ``[lo, hi]`` inside the unit
    square and mapped through the inverse CDF of the standard Gaussian
    (``torch.distributions.Normal(0, 1).icdf``), so the grid covers the prior's quantiles.

    Args:
        decode: maps latents ``(n*n, 2)`` on ``device`` to images ``(n*n, D)`` (or
            ``(n*n, *image_shape)``), e.g. the decoder's Bernoulli means.  Called once, under
            :func:`torch.no_grad`.
        n: grid side, an integer >= 2.
        device: where the latent grid is built (``"cpu"``, ``"cuda"``, ``"cuda:N"``,
            ``"auto"`` or a :class:`torch.device`).
        lo, hi: quantile range, ``0 < lo < hi < 1``.

    Returns:
        ``(n*n, D)`` decoded values, detached, on CPU, in row-major order: row ``r``,
        column ``c`` (index ``r*n + c``) decodes ``z = (icdf(u_c), icdf(u_{n-1-r}))``, so the
        first latent coordinate increases to the right and the second upwards.

    Raises:
        PplGenError: if ``n < 2``, ``lo``/``hi`` are out of range, ``device`` is invalid, or
            ``decode`` does not return ``n*n`` rows.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise PplGenError(
            f"n (grid side of the latent manifold) must be an integer >= 2, got {n!r}"
        )
    if not (0.0 < lo < hi < 1.0):
        raise PplGenError(f"lo and hi must satisfy 0 < lo < hi < 1, got lo={lo!r}, hi={hi!r}")
    dev = resolve_device(device)
    dtype = torch.get_default_dtype()
    u = torch.linspace(lo, hi, n, device=dev, dtype=dtype)
    std_normal = torch.distributions.Normal(
        torch.zeros((), device=dev, dtype=dtype), torch.ones((), device=dev, dtype=dtype)
    )
    q = std_normal.icdf(u)  # (n,) Gaussian quantiles, increasing
    z2, z1 = torch.meshgrid(q.flip(0), q, indexing="ij")  # z2[r, c] = q[n-1-r], z1[r, c] = q[c]
    z = torch.stack([z1, z2], dim=-1).reshape(n * n, 2)
    with torch.no_grad():
        out = decode(z)
    if not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != n * n:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PplGenError(f"decode must return {n * n} rows (one per latent point), got {got}")
    return out.detach().reshape(n * n, -1).to("cpu")


def save_manifold(
    images: torch.Tensor,
    image_shape: Sequence[int],
    n: int,
    path: PathLike,
    title: str = "",
) -> Path:
    """Save the n x n latent-manifold images from :func:`latent_manifold_grid` as one grid.

    Args:
        images: ``(n*n, D)`` in row-major grid order, values in [0, 1].
        image_shape: as for :func:`image_grid`.
        n: grid side (images per row).
        path: destination file (PNG unless its suffix says otherwise).
        title: optional figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`, written atomically.

    Raises:
        PplGenError: if ``images`` does not hold exactly ``n*n`` images or is rejected by
            :func:`image_grid`.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise PplGenError(f"n must be a positive integer, got {n!r}")
    if not isinstance(images, torch.Tensor) or images.dim() < 2 or images.shape[0] != n * n:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise PplGenError(
            f"images must hold n*n = {n * n} images for an n = {n} manifold, got {got}"
        )
    shape = _check_image_shape(image_shape)
    grid = image_grid(images, shape, nrow=n)
    w, h = _panel_inches(grid, scale=2.0, strips=len(shape) == 1)
    fig = _new_figure(w + 0.4, h + (0.8 if title else 0.4))
    ax = fig.add_subplot(1, 1, 1)
    _show_grid(ax, grid, strips=len(shape) == 1)
    ax.set_xlabel("z1 →")
    ax.set_ylabel("z2 →")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save_figure(fig, path)


# ----------------------------------------------------------------------------- report


def _num(value: Any) -> float | None:
    """A float from a metrics value, or None when missing / not numeric."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _fmt(value: Any, spec: str) -> str:
    v = _num(value)
    return _NA if v is None else format(v, spec)


def _fmt_pm(value: Any, se: Any) -> str:
    """``"-25.31 ± 0.12"``; just the value when the standard error is missing."""
    v = _num(value)
    if v is None:
        return _NA
    s = _num(se)
    return f"{v:.2f}" if s is None else f"{v:.2f} ± {s:.2f}"


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _schemes(metrics: Mapping) -> Mapping[str, Mapping]:
    schemes = metrics.get("schemes") if isinstance(metrics, Mapping) else None
    if not isinstance(schemes, Mapping):
        raise PplGenError("metrics must be a mapping with a 'schemes' mapping {name: {...}}")
    return schemes


def format_metrics_table(metrics: Mapping) -> str:
    """Format the per-scheme results of a comparison run as a GitHub markdown table.

    Args:
        metrics: the ``metrics.json`` schema of ``ppl-gen compare`` (see README): ``{"dataset",
            "model", ..., "schemes": {name: {"final_train_objective", "test_elbo",
            "test_elbo_se", "test_iwae", "test_iwae_se", "iwae_k", "test_log_likelihood",
            "gap_exact_minus_iwae", "gap_iwae_minus_elbo", "approximation_gap",
            "amortisation_gap", "psis_khat_mean", "psis_khat_frac_above_0_7",
            "train_seconds", "iterations", ...}}}``; bounds in nats per test datapoint, times
            in seconds.

    Returns:
        The table (no trailing newline): one row per scheme in mapping order.  Bounds read
        ``"-25.31 ± 0.12"`` (mean ± standard error over test points); IWAE − ELBO is the
        difference of the means; ``"n/a"`` marks a missing or ``None`` value.  A scheme
        with k-hat > 0.7 on some test points is flagged "bound unreliable" in the k-hat
        column (Vehtari et al. 2024).

    Raises:
        PplGenError: if ``metrics`` has no ``schemes`` mapping.
    """
    schemes = _schemes(metrics)
    header = (
        "| scheme | train objective (nats) | test ELBO (nats) | test IWAE-K (nats) "
        "| exact log p(x) (nats) | exact − IWAE | IWAE − ELBO | approximation gap "
        "| amortisation gap | PSIS k̂ mean | k̂ > 0.7 | train time (s) | iterations |"
    )
    lines = [header, "|:---|" + "---:|" * 12]
    for name, row in schemes.items():
        row = row if isinstance(row, Mapping) else {}
        elbo, iwae = _num(row.get("test_elbo")), _num(row.get("test_iwae"))
        gap = _NA if elbo is None or iwae is None else f"{iwae - elbo:.2f}"
        frac = _num(row.get("psis_khat_frac_above_0_7"))
        frac_cell = _NA if frac is None else f"{100 * frac:.0f}%"
        if frac:
            frac_cell += " (bound unreliable)"
        iterations = _num(row.get("iterations"))
        objective = _fmt(row.get("final_train_objective", row.get("final_train_elbo")), ".2f")
        kind = row.get("objective")
        if objective != _NA and kind:
            objective += f" ({kind})"
        cells = [
            _md_cell(name),
            objective,
            _fmt_pm(row.get("test_elbo"), row.get("test_elbo_se")),
            _fmt_pm(row.get("test_iwae"), row.get("test_iwae_se")),
            _fmt(row.get("test_log_likelihood"), ".2f"),
            _fmt(row.get("gap_exact_minus_iwae"), ".3f"),
            gap,
            _fmt(row.get("approximation_gap"), ".3f"),
            _fmt(row.get("amortisation_gap"), ".3f"),
            _fmt(row.get("psis_khat_mean"), ".2f"),
            frac_cell,
            _fmt(row.get("train_seconds"), ".1f"),
            _NA if iterations is None else str(int(iterations)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_objective_vs_time(
    histories: Mapping[str, tuple[Sequence[float], Sequence[float], str]], path: PathLike
) -> Path:
    """Training objective against wall time, all schemes on one axis.

    Args:
        histories: ``{scheme: (seconds, objective, objective_name)}``; seconds cumulative
            (s), objective in nats per datapoint (log-likelihood for EM, ELBO otherwise).
        path: PNG destination (written atomically).

    Raises:
        PplGenError: if a scheme's sequences differ in length.
    """
    fig = _new_figure(6.5, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for scheme, (seconds, objective, kind) in histories.items():
        if len(seconds) != len(objective):
            raise PplGenError(f"histories[{scheme!r}]: seconds and objective differ in length")
        if not objective:
            continue
        ax.plot(list(seconds), _finite_or_nan(objective), marker=".", label=f"{scheme} ({kind})")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("wall time (seconds)")
    ax.set_ylabel("training objective (nats per datapoint)")
    ax.set_title("Objective against wall time")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return _save_figure(fig, path)


def plot_khat_histogram(khats: Mapping[str, torch.Tensor], path: PathLike) -> Path:
    """Histogram of the PSIS k-hat of each test point's importance weights, per scheme.

    Args:
        khats: ``{scheme: (N,) k-hat}``; ``-inf`` entries (constant weights) are drawn at the
            left edge.  A dashed line marks the 0.7 reliability threshold.
        path: PNG destination (written atomically).
    """
    fig = _new_figure(6.5, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    finite = [k[torch.isfinite(k)] for k in khats.values()]
    lo = min([float(k.min()) for k in finite if k.numel()] + [-0.5])
    hi = max([float(k.max()) for k in finite if k.numel()] + [1.0])
    bins = torch.linspace(lo - 0.05, hi + 0.05, 31).tolist()
    for scheme, k in khats.items():
        values = k.clone().double()
        values[~torch.isfinite(values)] = bins[0]
        ax.hist(values.numpy(), bins=bins, histtype="step", linewidth=1.5, label=scheme)
    ax.axvline(0.7, linestyle="--", color="black", linewidth=1)
    ax.set_xlabel("PSIS k-hat of the importance weights (per test point)")
    ax.set_ylabel("test points")
    ax.legend(fontsize="small")
    return _save_figure(fig, path)


def _md_link_target(filename: str | os.PathLike, report_dir: Path) -> str:
    p = Path(filename)
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(report_dir.resolve())
        except ValueError:
            raise PplGenError(
                f"figure {str(filename)!r} must be a file name relative to the report folder "
                f"{str(report_dir)!r}"
            ) from None
    target = p.as_posix()
    return f"<{target}>" if any(ch in target for ch in " ()<>") else target


def write_report(
    path: PathLike,
    metrics: Mapping,
    figures: Mapping[str, str],
    notes: Sequence[str] = (),
) -> Path:
    """Write the markdown report (``report.md``) of a comparison run, atomically.

    Args:
        path: destination, e.g. ``<out>/report.md``.
        metrics: the ``metrics.json`` schema (see :func:`format_metrics_table`).
        figures: ``{caption: file name relative to the report's folder}``, in display order;
            an absolute path inside that folder is made relative.
        notes: free-text remarks, written as a bullet list.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    The report holds the title ``# ppl_gen comparison: <model> on <dataset>``, a setup
    paragraph (n_train, n_test, latent dimension, device, seed, IWAE K), the metrics
    table, a sentence on units and the ELBO <= IWAE-K ordering (Burda et al. 2016), the
    figures as ``![caption](file)`` links and the notes.  Missing setup values read "n/a".

    Raises:
        PplGenError: if ``metrics`` has no ``schemes`` mapping or a figure path is absolute
            and outside the report's folder.
    """
    path = Path(path)
    schemes = _schemes(metrics)

    def setup(key: str) -> str:
        value = metrics.get(key)
        return _NA if value is None else str(value)

    ks = []
    for row in schemes.values():
        k = _num(row.get("iwae_k")) if isinstance(row, Mapping) else None
        if k is not None and int(k) not in ks:
            ks.append(int(k))
    k_text = ", ".join(str(k) for k in ks) if ks else _NA

    parts = [
        f"# ppl_gen comparison: {setup('model')} on {setup('dataset')}",
        "",
        f"Each scheme was trained on {setup('n_train')} training datapoints and evaluated on "
        f"{setup('n_test')} held-out test datapoints, with latent dimension "
        f"{setup('latent_dim')}, on device {setup('device')}, with seed {setup('seed')}. "
        f"The importance-weighted bound uses K = {k_text} importance samples per datapoint.",
        "",
        format_metrics_table(metrics),
        "",
        "All bounds are log-likelihood lower bounds in nats per test datapoint (mean ± standard "
        "error over test datapoints); higher is better. For the same model and guide the "
        "IWAE-K bound is at least the ELBO in expectation and tightens as K grows (Burda et "
        "al. 2016), so IWAE − ELBO measures how loose the ELBO is for that scheme.",
    ]
    if figures:
        parts += ["", "## Figures", ""]
        for caption, filename in figures.items():
            cap = str(caption).replace("[", "\\[").replace("]", "\\]")
            parts += [f"![{cap}]({_md_link_target(filename, path.parent)})", ""]
        parts.pop()
    if notes:
        parts += ["", "## Notes", ""]
        parts += [f"- {' '.join(str(note).split())}" for note in notes]
    return write_text(path, "\n".join(parts) + "\n")
