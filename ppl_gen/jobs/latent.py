"""One function per latent tool run: compute, write ``<tool>.png`` and ``<tool>.npz`` into
an output folder, return a JSON-able summary.  ``ppl-gen latent ...`` calls these.

Images come from :func:`load_images`: by default the test split of the dataset the
checkpoint was trained on, as grey levels (no binarisation).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.data.datasets import load_dataset
from ppl_gen.latent.attributes import apply_attribute, attribute_mask, attribute_vector
from ppl_gen.latent.embedding import project_2d, tsne
from ppl_gen.latent.interpolate import check_endpoints, corner_grid, interpolate
from ppl_gen.latent.manifold import fraction_outside, grid_distribution, manifold
from ppl_gen.latent.pairs import EncoderDecoder, check_latent
from ppl_gen.latent.reconstruction import denoise, reconstruct
from ppl_gen.viz import report as reports
from ppl_gen.viz.latent import save_arrays, save_scatter

PathLike = str | os.PathLike


def load_images(
    pair: EncoderDecoder,
    data: str | None = None,
    data_root: str | None = None,
    *,
    n: int | None = None,
    seed: int | None = None,
    split: str = "test",
) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """Test images for the tools: ``(x (N, D), labels (N,) or None, dataset name)``.

    Args:
        pair: the checkpoint's pair (its ``data`` gives the default dataset).
        data, data_root: override the dataset (``data``, ``data_root``).
        n: keep the first ``n`` test images (``n_points``).
        seed: split seed (default: the checkpoint's).
        split: ``"test"`` (default) or ``"train"`` (the training codes of the manifold).

    Raises:
        PplGenError: no dataset known or given (``data``), or images whose width differs
            from the checkpoint's.
    """
    spec = pair.data or {}
    name = data or spec.get("name")
    if name is None:
        raise PplGenError("data is required: the checkpoint does not record its dataset")
    root = data_root if data_root is not None else spec.get("root")
    seed = seed if seed is not None else int(spec.get("seed") or 0)
    splits = load_dataset(name, root, seed=seed)
    if splits.data_dim != pair.data_dim:
        raise PplGenError(
            f"data {splits.name}: {splits.data_dim} values per image, the checkpoint "
            f"works on {pair.data_dim} (image shape {pair.image_shape})"
        )
    if split == "train":
        x, y = splits.train, getattr(splits, "train_labels", None)
    else:
        x, y = splits.test, splits.test_labels
    if n is not None:
        require_positive_int("n_points", n)
        x = x[:n]
        y = None if y is None else y[:n]
    return x, y, splits.name


def _index(i: int, n: int, flag: str) -> int:
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
        raise PplGenError(f"{flag} must be an index in 0..{n - 1}, got {i!r}")
    return i


def _labels_for(pair: EncoderDecoder, labels: torch.Tensor | None, idx: list[int]):
    if not pair.conditional:
        return None
    if labels is None:
        raise PplGenError("data: a conditional checkpoint needs labelled data")
    return labels[idx]


def _paths(out: PathLike, tool: str) -> tuple[Path, Path]:
    out = Path(out)
    return out / f"{tool}.png", out / f"{tool}.npz"


def _load_z(path: PathLike, flag: str) -> torch.Tensor:
    import numpy as np

    try:
        arr = np.load(path, allow_pickle=False)
        if isinstance(arr, np.lib.npyio.NpzFile):
            with arr:
                arr = arr[arr.files[0]]
    except (OSError, ValueError) as exc:
        raise PplGenError(
            f"{flag} {str(path)!r}: cannot read a .npy latent point ({exc})"
        ) from None
    return torch.as_tensor(np.asarray(arr, dtype=np.float32))


def run_interpolate(
    pair: EncoderDecoder,
    out: PathLike,
    x: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    *,
    index_a: int = 0,
    index_b: int = 1,
    z_from: PathLike | torch.Tensor | None = None,
    z_to: PathLike | torch.Tensor | None = None,
    steps: int = 10,
    method: str = "slerp",
    label: int | None = None,
) -> dict:
    """Interpolate between two test images' codes (or two given codes) and decode the path.

    Writes ``interpolate.png`` (the decoded path, both ``lerp`` and ``slerp`` rows, the
    requested method first) and ``interpolate.npz`` (``z`` of the requested path
    ``(steps, Z)``, ``images`` ``(steps, D)``, and the other method's ``z_other`` /
    ``images_other``).

    Raises:
        PplGenError: endpoints of different shapes or of the wrong latent dimension
            (``latent_dim`` mismatch), bad indices, or a pair without encoder when no
            codes are given.
    """
    if (z_from is None) != (z_to is None):
        raise PplGenError("z_from and z_to must be given together")
    y_dec = None
    if z_from is not None:
        z0 = z_from if torch.is_tensor(z_from) else _load_z(z_from, "z_from")
        z1 = z_to if torch.is_tensor(z_to) else _load_z(z_to, "z_to")
        check_endpoints(z0, z1)
        check_latent(z0, pair.latent_dim, "z_from/z_to points")
        z0, z1 = z0.reshape(-1).to(pair.device), z1.reshape(-1).to(pair.device)
    else:
        if x is None:
            raise PplGenError("data: images are needed to interpolate between (or z_from)")
        a, b = _index(index_a, len(x), "index_a"), _index(index_b, len(x), "index_b")
        y = _labels_for(pair, labels, [a, b])
        z = pair.encode_rows(x[[a, b]], y)
        z0, z1 = z[0], z[1]
        y_dec = None if y is None else y[:1]
    if pair.conditional:
        if label is not None:
            y_dec = torch.tensor([label])
        if y_dec is None:
            raise PplGenError("label is required to decode a conditional checkpoint")
    other = "lerp" if method == "slerp" else "slerp"
    path = interpolate(z0, z1, steps, method)
    path_other = interpolate(z0, z1, steps, other)
    images = pair.decode_rows(path, y_dec).cpu()
    images_other = pair.decode_rows(path_other, y_dec).cpu()
    fig, arrays = _paths(out, "interpolate")
    rows = torch.cat([images, images_other])
    reports.save_image_panels(
        {f"{method} (top), {other} (bottom)": rows}, pair.image_shape, fig, nrow=steps
    )
    save_arrays(arrays, z=path, images=images, z_other=path_other, images_other=images_other)
    return {
        "tool": "interpolate",
        "method": method,
        "steps": steps,
        "norms": path.norm(dim=-1).tolist(),
        "figure": str(fig),
        "arrays": str(arrays),
    }


def run_grid(
    pair: EncoderDecoder,
    out: PathLike,
    x: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    corners: tuple[int, int, int, int] = (0, 1, 2, 3),
    n: int = 8,
    method: str = "lerp",
    label: int | None = None,
) -> dict:
    """Decode the ``n x n`` grid spanned by four test images' codes
    (:func:`~ppl_gen.latent.interpolate.corner_grid`); writes ``grid.png`` / ``grid.npz``
    (``z (n*n, Z)``, ``images (n*n, D)``, ``corners`` indices).

    Raises:
        PplGenError: not four corner indices (``corners``) or as :func:`run_interpolate`.
    """
    if len(corners) != 4:
        raise PplGenError(f"corners must be 4 comma-separated indices, got {len(corners)}")
    idx = [_index(int(i), len(x), "corners") for i in corners]
    y = _labels_for(pair, labels, idx)
    z = corner_grid(pair.encode_rows(x[idx], y), n, method)
    y_dec = None
    if pair.conditional:
        y_dec = torch.tensor([label if label is not None else int(y[0])])
    images = pair.decode_rows(z, y_dec).cpu()
    fig, arrays = _paths(out, "grid")
    reports.save_manifold(
        images,
        pair.image_shape,
        n,
        fig,
        title=f"4-corner grid ({method})",
        xlabel=f"top row: test image {idx[0]} → {idx[1]}; bottom row: {idx[2]} → {idx[3]}",
        ylabel=f"left column: {idx[0]} → {idx[2]}; right: {idx[1]} → {idx[3]}",
    )
    save_arrays(arrays, z=z, images=images, corners=torch.tensor(idx))
    return {
        "tool": "grid",
        "n": n,
        "method": method,
        "corners": idx,
        "figure": str(fig),
        "arrays": str(arrays),
    }


def training_codes(
    pair: EncoderDecoder,
    data: str | None = None,
    data_root: str | None = None,
    seed: int | None = None,
) -> torch.Tensor | None:
    """Codes ``(N, Z)`` of the training split the checkpoint was trained on (``None`` for a
    decoder-only pair or when the checkpoint records no dataset and none is given).

    Raises:
        PplGenError: as :func:`load_images`.
    """
    if pair.encode is None or (data is None and not (pair.data or {}).get("name")):
        return None
    x, y, _ = load_images(pair, data, data_root, seed=seed, split="train")
    return pair.encode_rows(x, y if pair.conditional else None).cpu()


def run_manifold(
    pair: EncoderDecoder,
    out: PathLike,
    *,
    n: int = 20,
    label: int | None = None,
    codes: torch.Tensor | None = None,
    data: str | None = None,
    data_root: str | None = None,
    seed: int | None = None,
) -> dict:
    """The 2-D manifold (:func:`~ppl_gen.latent.manifold.manifold`) on the model's latent
    distribution: the prior for VAEs / CVAEs / generators, the Gaussian of the training codes
    for a plain autoencoder.  Writes ``manifold.png`` / ``manifold.npz`` (``z (n*n, 2)``,
    ``images (n*n, D)``, ``grid_mean``, ``grid_std``).

    Args:
        codes: ``(N, 2)`` training codes (default: encode the checkpoint's training split,
            dataset overridable with ``data`` / ``data_root`` / ``seed``).

    Raises:
        PplGenError: the checkpoint's latent space is not 2-D (``latent_dim``), a
            conditional checkpoint without ``label``, or an autoencoder whose training
            data cannot be loaded (``data``).
    """
    if pair.conditional and label is None:
        raise PplGenError("label is required for the manifold of a conditional checkpoint")
    if pair.latent_dim != 2:
        manifold(pair, n, label=label)  # raises, naming latent_dim
    if codes is None:
        if pair.prior is None and pair.encode is not None and not (data or pair.data):
            raise PplGenError(
                "data: this autoencoder has no prior and its checkpoint records no dataset; "
                "give the training data so the grid can be laid on its codes"
            )
        codes = training_codes(pair, data, data_root, seed)
    where = grid_distribution(pair, codes)
    images, z = manifold(pair, n, label=label, codes=codes)
    outside = fraction_outside(z, codes) if codes is not None else None
    fig, arrays = _paths(out, "manifold")
    axis = "prior quantiles" if where.source == "prior" else "code-Gaussian quantiles"
    reports.save_manifold(
        images,
        pair.image_shape,
        n,
        fig,
        title=f"2-D latent manifold on the {where.describe()}",
        xlabel=f"z1 ({axis} 5%..95%) →",
        ylabel=f"z2 ({axis} 5%..95%) →",
    )
    save_arrays(arrays, z=z, images=images, grid_mean=where.mean, grid_std=where.std)
    return {
        "tool": "manifold",
        "n": n,
        "grid_on": where.source,
        "grid_mean": where.mean.tolist(),
        "grid_std": where.std.tolist(),
        "grid_fraction_outside_codes": outside,
        "figure": str(fig),
        "arrays": str(arrays),
    }


def run_attribute(
    pair: EncoderDecoder,
    out: PathLike,
    x: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    attribute: str = "thick",
    n_images: int = 8,
    alphas: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0),
) -> dict:
    """Compute an attribute vector over the test codes and add multiples of it to the first
    ``n_images`` codes; writes ``attribute.png`` (one row per image, one column per
    ``alpha``) and ``attribute.npz`` (``vector (Z,)``, ``z (n_images, A, Z)``, ``images``,
    ``alphas``, ``mask``).

    Raises:
        PplGenError: no positive or no negative examples, or an unknown attribute
            (``attribute``).
    """
    require_positive_int("n_images", n_images)
    mask = attribute_mask(attribute, x, labels)
    y = labels if pair.conditional else None
    if pair.conditional and labels is None:
        raise PplGenError("data: a conditional checkpoint needs labelled data")
    z = pair.encode_rows(x, y)
    vector = attribute_vector(z, mask.to(z.device), attribute)
    k = min(n_images, len(x))
    paths = apply_attribute(z[:k], vector, torch.tensor(alphas))
    y_dec = None if y is None else y[:k].repeat_interleave(len(alphas))
    images = pair.decode_rows(paths.reshape(-1, pair.latent_dim), y_dec).cpu()
    fig, arrays = _paths(out, "attribute")
    label = f"{attribute}: z + α v, one row per test image"
    reports.save_image_panels(
        {label: images},
        pair.image_shape,
        fig,
        nrow=len(alphas),
        col_labels=[f"{a:g}" for a in alphas],
        xlabel="α (multiple of the attribute vector)",
    )
    save_arrays(
        arrays, vector=vector, z=paths, images=images, alphas=torch.tensor(alphas), mask=mask
    )
    return {
        "tool": "attribute",
        "attribute": attribute,
        "positives": int(mask.sum()),
        "negatives": int((~mask).sum()),
        "vector_norm": float(vector.norm()),
        "figure": str(fig),
        "arrays": str(arrays),
    }


def run_tsne(
    pair: EncoderDecoder,
    out: PathLike,
    x: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    perplexity: float = 30.0,
    seed: int = 0,
) -> dict:
    """Encode ``x``; writes the t-SNE of the codes (``tsne.png``) and the latent scatter
    (``latent_scatter.png``: the codes if 2-D, else their first two principal components),
    both coloured by label, and ``tsne.npz`` (``z``, ``tsne``, ``scatter``, ``labels``).

    Raises:
        PplGenError: too few points for the perplexity (``perplexity``), or no encoder.
    """
    y = labels if pair.conditional else None
    z = pair.encode_rows(x, y).cpu()
    emb = tsne(z, perplexity, seed)
    flat, how = project_2d(z)
    fig, arrays = _paths(out, "tsne")
    scatter = Path(out) / "latent_scatter.png"
    save_scatter(emb, labels, fig, title=f"t-SNE of the codes (perplexity {perplexity:g})")
    save_scatter(flat, labels, scatter, title=f"Latent codes: {how}")
    save_arrays(arrays, z=z, tsne=emb, scatter=flat, labels=labels)
    return {
        "tool": "tsne",
        "n_points": int(z.shape[0]),
        "perplexity": perplexity,
        "figure": str(fig),
        "scatter_figure": str(scatter),
        "arrays": str(arrays),
    }


def run_reconstruct(
    pair: EncoderDecoder,
    out: PathLike,
    x: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    n_images: int = 10,
    noise: str | None = None,
    noise_level: float = 0.3,
    seed: int = 0,
) -> dict:
    """Reconstructions of the first ``n_images`` test images; with ``noise`` the denoising
    before/after view (original, corrupted, reconstruction of the corrupted input).
    Writes ``reconstruct.png`` / ``reconstruct.npz`` and returns the mean squared error
    per image against the clean originals.
    """
    require_positive_int("n_images", n_images)
    x = x[:n_images]
    y = None if not pair.conditional or labels is None else labels[:n_images]
    rows: dict[str, torch.Tensor] = {}
    arrays_in: dict[str, torch.Tensor] = {"original": x}
    if noise is None:
        recon = reconstruct(pair, x, y)
    else:
        gen = torch.Generator(device=pair.device).manual_seed(seed)
        noisy, recon = denoise(pair, x, noise, noise_level, y, gen)
        rows["corrupted"] = noisy.clamp(0, 1)
        arrays_in["corrupted"] = noisy
    rows["reconstruction"] = recon
    arrays_in["reconstruction"] = recon
    fig, arrays = _paths(out, "reconstruct")
    reports.save_reconstructions(x, rows, pair.image_shape, fig)
    save_arrays(arrays, **arrays_in)
    sq = (recon - x.reshape(recon.shape)).pow(2).sum(-1)
    return {
        "tool": "reconstruct",
        "noise": noise,
        "noise_level": noise_level if noise else None,
        "squared_error_mean": float(sq.mean()),
        "figure": str(fig),
        "arrays": str(arrays),
    }
