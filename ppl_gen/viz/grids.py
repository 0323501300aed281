"""Image grids: tile images with :func:`torchvision.utils.make_grid` and save labelled panels.

Images are float tensors with values in [0, 1] (``(n, D)`` flattened or ``(n, *image_shape)``);
``image_shape`` is ``(D,)`` for generic vectors (each drawn as a 1 x D strip), ``(H, W)`` for
grey images or ``(C, H, W)`` with C = 1 or 3.  Figures are drawn on the pyplot-free canvas
of :mod:`ppl_gen.viz.figures` and written atomically.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

from ppl_gen.core.errors import PplGenError
from ppl_gen.viz.figures import DPI, PathLike, new_figure, save_figure

_PADDING = 2
_PAD_VALUE = 1.0


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


def _cell_side(shape: tuple[int, ...], axis: int) -> int:
    """Pixels of one image along the grid's rows (``axis`` 0) or columns (1)."""
    if len(shape) == 1:
        return 1 if axis == 0 else shape[0]
    return shape[-2] if axis == 0 else shape[-1]


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
        width = min(max(w * scale / DPI, 2.5), 6.0)
        return width, min(max(0.12 * rows + 0.2, 0.6), 8.0)
    longest = max(h, w)
    inches_per_px = min(max(scale / DPI, 2.5 / longest), 12.0 / longest)
    return max(w * inches_per_px, 0.6), max(h * inches_per_px, 0.6)


def _wrap(text: str, width_inches: float, chars_per_inch: float = 11.0) -> str:
    """``text`` broken into lines that fit ``width_inches`` at the default font size (a
    title wider than its figure is cut off at both edges)."""
    return textwrap.fill(str(text), max(12, int(width_inches * chars_per_inch)))


def _tick_centres(size_px: int, count: int) -> list[float]:
    """Pixel centres of ``count`` grid cells along a side of ``size_px`` pixels (the grid
    has ``_PADDING`` pixels of padding before every cell and after the last)."""
    cell = (size_px - _PADDING) / count
    return [_PADDING / 2 + cell * (i + 0.5) for i in range(count)]


def _label_cells(ax, grid: torch.Tensor, rows: Sequence[str] | None, cols: Sequence[str] | None):
    """Row labels left of a grid and column labels below it, at the cell centres."""
    _, h, w = grid.shape
    if rows:
        ax.set_yticks(_tick_centres(h, len(rows)), [str(r) for r in rows], fontsize="small")
    if cols:
        ax.set_xticks(_tick_centres(w, len(cols)), [str(c) for c in cols], fontsize="small")
    ax.tick_params(length=0)


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
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    xlabel: str = "",
) -> Path:
    """Save one row of image grids side by side, one per panel (e.g. samples per scheme).

    Args:
        panels: ``{label: images}``; each ``images`` is ``(n_i, D)`` or
            ``(n_i, *image_shape)`` in [0, 1], drawn with :func:`image_grid`; the label is the
            panel title.
        image_shape: as for :func:`image_grid`.
        path: destination file (PNG unless its suffix says otherwise).
        nrow: images per grid row in every panel (default as in :func:`image_grid`).
        title: optional figure title.  Titles are wrapped to the figure's width.
        row_labels: optional label of each grid row of the first panel (e.g. the class of
            each CVAE row), drawn at the row centres on its left.
        col_labels: optional label of each grid column of every panel (e.g. the α of
            each attribute column), drawn below the columns; ``xlabel`` names them.

    Returns:
        ``path`` as a :class:`~pathlib.Path`, written atomically.

    Raises:
        PplGenError: if ``panels`` is empty, any panel is rejected by :func:`image_grid`,
            or there are more row / column labels than grid rows / columns.
    """
    if not panels:
        raise PplGenError("panels must hold at least one {label: images} entry")
    shape = _check_image_shape(image_shape)
    grids = {label: image_grid(imgs, shape, nrow) for label, imgs in panels.items()}
    sizes = [_panel_inches(g, strips=len(shape) == 1) for g in grids.values()]
    first = next(iter(grids.values()))
    n_rows = (first.shape[1] - _PADDING) // (_cell_side(shape, 0) + _PADDING)
    n_cols = (first.shape[2] - _PADDING) // (_cell_side(shape, 1) + _PADDING)
    if row_labels and len(row_labels) > n_rows:
        raise PplGenError(f"row_labels: {len(row_labels)} labels for {n_rows} grid rows")
    if col_labels and len(col_labels) > n_cols:
        raise PplGenError(f"col_labels: {len(col_labels)} labels for {n_cols} grid columns")
    width = sum(w for w, _ in sizes) + 0.3 * len(sizes) + (0.7 if row_labels else 0.0)
    titles = {label: _wrap(label, w + 0.2) for label, (w, _) in zip(grids, sizes, strict=True)}
    lines = max(t.count("\n") + 1 for t in titles.values())
    head = _wrap(title, width, 9.0) if title else ""
    height = max(h for _, h in sizes) + 0.25 * lines + 0.25
    height += (0.3 * (head.count("\n") + 1) + 0.1) if head else 0.0
    height += (0.25 if col_labels else 0.0) + (0.25 * (len(xlabel) // 20 + 1) if xlabel else 0.0)
    fig = new_figure(width, height)
    axes = fig.subplots(1, len(grids), squeeze=False)[0]
    for i, (ax, (label, grid)) in enumerate(zip(axes, grids.items(), strict=True)):
        _show_grid(ax, grid, strips=len(shape) == 1)
        ax.set_title(titles[label])
        _label_cells(ax, grid, row_labels if i == 0 else None, col_labels)
        if xlabel:
            ax.set_xlabel(_wrap(xlabel, sizes[i][0] + 0.2))
    if head:
        fig.suptitle(head)
    fig.tight_layout()
    return save_figure(fig, path)


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
    fig = new_figure(panel_w + 1.2, (panel_h + 0.15) * len(grids) + 0.3)
    axes = fig.subplots(len(grids), 1, squeeze=False)[:, 0]
    for ax, (label, grid) in zip(axes, grids.items(), strict=True):
        _show_grid(ax, grid, strips=len(shape) == 1)
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return save_figure(fig, path)


def save_manifold(
    images: torch.Tensor,
    image_shape: Sequence[int],
    n: int,
    path: PathLike,
    title: str = "",
    *,
    xlabel: str = "z1 →",
    ylabel: str = "z2 →",
) -> Path:
    """Save n x n latent-manifold images as one grid (see
    :func:`ppl_gen.viz.manifold.latent_manifold_grid`).

    Args:
        images: ``(n*n, D)`` in row-major grid order, values in [0, 1].
        image_shape: as for :func:`image_grid`.
        n: grid side (images per row).
        path: destination file (PNG unless its suffix says otherwise).
        title: optional figure title (wrapped to the figure's width).
        xlabel, ylabel: what the columns and rows vary (default the latent coordinates
            ``z1`` to the right and ``z2`` upwards; a corner grid names its corners).

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
    head = _wrap(title, w + 0.4) if title else ""
    xl, yl = _wrap(xlabel, w + 0.2), _wrap(ylabel, h + 0.2)
    extra = 0.25 * (head.count("\n") + 1) + 0.2 if head else 0.0
    extra += 0.2 * (xl.count("\n") + 1)
    fig = new_figure(w + 0.3 + 0.2 * (yl.count("\n") + 1), h + 0.3 + extra)
    ax = fig.add_subplot(1, 1, 1)
    _show_grid(ax, grid, strips=len(shape) == 1)
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    if head:
        ax.set_title(head)
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = ["image_grid", "save_image_panels", "save_manifold", "save_reconstructions"]
