"""The two domains of domain adaptation: labelled source and (unlabelled) target images.

One domain is :class:`DomainData`: ``(N, C, H, W)`` float32 images in [0, 1] with int64
labels, split into train and test.  :func:`load_domain` reads MNIST, MNIST-M
(:mod:`ppl_gen.data.mnistm`) or a ``.npz`` file; :func:`match_channels` makes two domains
agree on grey / colour; :func:`input_stats` gives the per-channel standardisation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.data.datasets import default_data_root
from ppl_gen.data.mnistm import _read_mnist, load_mnistm


@dataclass
class DomainData:
    """One domain's images: ``x_*`` ``(N, C, H, W)`` float32 in [0, 1], ``y_*`` ``(N,)``
    int64 labels (``y_train`` may be ``None`` for an unlabelled target)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor | None

    @property
    def channels(self) -> int:
        """Image channels C."""
        return int(self.x_train.shape[1])


DOMAINS = ("mnist", "mnistm")


def load_domain(
    name: str,
    *,
    data_root: str | os.PathLike | None = None,
    bsds_root: str | os.PathLike | None = None,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
    flag: str = "source",
    cache_dir: str | os.PathLike | None = None,
) -> DomainData:
    """Read one domain as ``(N, C, 28, 28)`` float32 images in [0, 1] with labels.

    Args:
        name: ``"mnist"`` (1 channel; torchvision MNIST in ``data_root``), ``"mnistm"``
            (3 channels; :func:`ppl_gen.data.mnistm.load_mnistm` from ``data_root`` and
            ``bsds_root``) or a ``.npz`` file with ``x_train``, ``y_train``, ``x_test``,
            ``y_test`` (``x``: ``(N, H, W)`` or ``(N, C, H, W)``, values in [0, 1]).
        data_root: MNIST folder (default :func:`ppl_gen.data.datasets.default_data_root`).
        bsds_root: photographs for MNIST-M (default ``../shared/data/bsds500/train``).
        seed: MNIST-M seed.
        n_train, n_test: keep only the first N training / test images.
        flag: the parameter named in error messages (``source`` / ``target``; the CLI
            turns it into ``--source`` / ``--target``).
        cache_dir: MNIST-M cache folder.

    Raises:
        PplGenError: unknown name, missing or malformed files (naming ``flag``,
            ``data_root`` or ``bsds_root``), values outside [0, 1].
    """
    for f, v in (("n_train", n_train), ("n_test", n_test)):
        if v is not None:
            require_positive_int(f, v)
    key = str(name).strip()
    if key.lower() == "mnist":
        root = data_root if data_root is not None else default_data_root()
        if root is None:
            raise PplGenError("data_root is required for mnist: a folder containing MNIST/raw")
        (xtr, ytr), (xte, yte) = _read_mnist(root, True), _read_mnist(root, False)
        x_train, x_test = xtr[:, None].float() / 255.0, xte[:, None].float() / 255.0
    elif key.lower() == "mnistm":
        x_train, ytr = load_mnistm(
            data_root, bsds_root, split="train", seed=seed, cache_dir=cache_dir
        )
        x_test, yte = load_mnistm(
            data_root, bsds_root, split="test", seed=seed, cache_dir=cache_dir
        )
    elif key.lower().endswith(".npz"):
        x_train, ytr, x_test, yte = _read_npz(Path(key), flag)
    else:
        raise PplGenError(f"{flag} must be mnist, mnistm or a .npz file, got {name!r}")
    return DomainData(
        key.lower() if key.lower() in DOMAINS else Path(key).name,
        x_train[:n_train],
        ytr[:n_train],
        x_test[:n_test],
        yte[:n_test],
    )


def _read_npz(path: Path, flag: str) -> tuple[torch.Tensor, ...]:
    import numpy as np

    if not path.is_file():
        raise PplGenError(f"{flag} {str(path)!r}: no such file")
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except KeyError as exc:
        raise PplGenError(f"{flag} {str(path)!r} lacks the array {exc}") from None
    except Exception as exc:
        raise PplGenError(
            f"{flag} {str(path)!r}: cannot read as .npz ({type(exc).__name__})"
        ) from None
    out = []
    for split in ("train", "test"):
        x = torch.as_tensor(arrays[f"x_{split}"], dtype=torch.float32)
        y = torch.as_tensor(arrays[f"y_{split}"]).to(torch.int64)
        if x.dim() == 3:
            x = x[:, None]
        if x.dim() != 4 or y.shape != (x.shape[0],) or x.shape[0] == 0:
            raise PplGenError(
                f"{flag} {str(path)!r}: x_{split} must be (N, H, W) or (N, C, H, W) with "
                f"y_{split} (N,), got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if not torch.isfinite(x).all() or float(x.min()) < 0 or float(x.max()) > 1:
            raise PplGenError(f"{flag} {str(path)!r}: x_{split} values must be finite, in [0, 1]")
        out += [x, y]
    return tuple(out)


def match_channels(source: DomainData, target: DomainData) -> tuple[DomainData, DomainData]:
    """Give both domains the same number of channels: greyscale (1 channel) images are
    replicated to 3 channels when the other domain is RGB (MNIST → MNIST-M, as in the
    paper); other mismatches are refused.

    Raises:
        PplGenError: channel counts that differ and are not 1 vs 3, or images of
            different sizes (the message starts with ``source``).
    """
    cs, ct = source.channels, target.channels
    if source.x_train.shape[2:] != target.x_train.shape[2:]:
        raise PplGenError(
            f"source {source.name} images are {tuple(source.x_train.shape[2:])} but target "
            f"{target.name} images are {tuple(target.x_train.shape[2:])}: sizes must match"
        )
    if cs == ct:
        return source, target
    if {cs, ct} != {1, 3}:
        raise PplGenError(
            f"source {source.name} has {cs} channels but target {target.name} has {ct}: "
            "only equal counts or greyscale (1) vs RGB (3) are accepted"
        )

    def rgb(d: DomainData) -> DomainData:
        if d.channels == 3:
            return d
        return DomainData(
            d.name,
            d.x_train.expand(-1, 3, -1, -1).contiguous(),
            d.y_train,
            d.x_test.expand(-1, 3, -1, -1).contiguous(),
            d.y_test,
        )

    return rgb(source), rgb(target)


def input_stats(*domains: DomainData) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation ``(C,)`` of the pooled training images of
    ``domains`` (the model's input standardisation)."""
    x = torch.cat([d.x_train for d in domains])
    return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))
