"""Image data for the adversarial trainers: ``(N, C, H, W)`` float tensors in [0, 1] with
optional labels, from MNIST, scikit-learn's digits, MNIST-M or a folder of image files.

The trainers feed the networks ``2 x - 1`` (the tanh range); generated images are mapped
back with :func:`to_unit` before they are saved or scored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ppl_gen.core.errors import PplGenError, require_positive_int

IMAGE_DATA_CHOICES = "mnist, digits, mnistm, or a folder of image files"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True, eq=False)
class ImageData:
    """Training images.

    Attributes:
        name: ``"mnist"``, ``"digits"``, ``"mnistm"`` or the folder's path.
        images: ``(N, C, H, W)`` float32 in [0, 1], C = 1 (grey) or 3 (colour).
        labels: ``(N,)`` int64 class labels, or ``None``.
        num_classes: number of classes (``None`` without labels).
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor | None
    num_classes: int | None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Map generator outputs in [-1, 1] to images in [0, 1] (clamped)."""
    return ((x + 1) / 2).clamp(0, 1)


def to_tanh_range(x: torch.Tensor) -> torch.Tensor:
    """Map images in [0, 1] to [-1, 1]."""
    return x * 2 - 1


def load_images(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    split: str = "train",
    n: int | None = None,
    seed: int = 0,
    bsds_root: str | os.PathLike | None = None,
    channels: int | None = None,
) -> ImageData:
    """Load a dataset of images.

    Args:
        name: ``"mnist"`` (torchvision MNIST under ``root``; ``split`` train = all training
            images, test = the official test set), ``"digits"`` (scikit-learn's 1,797 8x8
            digits, all of them), ``"mnistm"`` (:func:`ppl_gen.data.mnistm.load_mnistm`, MNIST
            under ``root`` and photographs under ``bsds_root``), or a folder: image files
            directly inside it (unlabelled) or in class subfolders (labelled, as
            ``torchvision.datasets.ImageFolder``); all images must have one size.
        root: MNIST folder (torchvision layout) for ``mnist`` / ``mnistm``.
        split: ``"train"`` or ``"test"`` (MNIST, MNIST-M).
        n: keep a seeded random subset of ``n`` images.
        seed: seed of that subset (and of MNIST-M's build).
        bsds_root: photographs for MNIST-M.
        channels: force 1 (grey: channel mean) or 3 (colour: grey repeated); default as
            stored.

    Returns:
        :class:`ImageData` on the CPU.

    Raises:
        PplGenError: unknown ``name`` (``--data``), a missing / empty folder, images of
            different sizes, ``n`` larger than the data (``--n-train``), a bad ``channels``.
    """
    key = str(name).strip()
    if key.lower() == "mnist":
        from ppl_gen.data.datasets import load_dataset

        d = load_dataset("mnist", root, val_fraction=0.0)
        flat, y = (d.train, d.train_labels) if split == "train" else (d.test, d.test_labels)
        data = ImageData("mnist", flat.reshape(-1, 1, 28, 28), y, 10)
    elif key.lower() == "digits":
        from ppl_gen.data.datasets import _read_digits

        x, y, _, _ = _read_digits()
        data = ImageData("digits", x.reshape(-1, 1, 8, 8), y, 10)
    elif key.lower() == "mnistm":
        from ppl_gen.data.mnistm import load_mnistm

        x, y = load_mnistm(root, bsds_root, split=split, seed=seed)
        data = ImageData("mnistm", x, y, 10)
    elif Path(key).is_dir():
        data = _read_folder(Path(key))
    else:
        raise PplGenError(f"data must be one of {IMAGE_DATA_CHOICES}, got {key!r} (no such folder)")
    if channels is not None:
        data = with_channels(data, channels)
    if n is not None:
        require_positive_int("n_train", n)
        total = data.images.shape[0]
        if n > total:
            raise PplGenError(f"n_train {n} exceeds the {total} images of {data.name}")
        idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]
        labels = data.labels[idx] if data.labels is not None else None
        data = ImageData(data.name, data.images[idx], labels, data.num_classes)
    return data


def with_channels(data: ImageData, channels: int) -> ImageData:
    """Return ``data`` with 1 (grey: channel mean) or 3 (colour: grey repeated) channels."""
    if channels not in (1, 3):
        raise PplGenError(f"channels must be 1 or 3, got {channels!r}")
    x = data.images
    if x.shape[1] != channels:
        x = x.mean(1, keepdim=True) if channels == 1 else x.expand(-1, 3, -1, -1).contiguous()
    return ImageData(data.name, x, data.labels, data.num_classes)


def _read_folder(folder: Path) -> ImageData:
    from PIL import Image

    subdirs = sorted(p for p in folder.iterdir() if p.is_dir())
    entries: list[tuple[Path, int | None]] = []
    if subdirs:
        for label, sub in enumerate(subdirs):
            entries += [(p, label) for p in sorted(sub.iterdir()) if _is_image(p)]
    entries += [(p, None) for p in sorted(folder.iterdir()) if _is_image(p)]
    if not entries:
        raise PplGenError(
            f"data {str(folder)!r}: the folder holds no image files ({', '.join(IMAGE_SUFFIXES)})"
        )
    imgs = []
    for path, _ in entries:
        try:
            with Image.open(path) as im:
                imgs.append(im.convert("RGB") if im.mode not in ("L", "RGB") else im.copy())
        except OSError as exc:
            raise PplGenError(f"data: cannot read image {str(path)!r} ({exc})") from None
    sizes = {im.size for im in imgs}
    if len(sizes) > 1:
        raise PplGenError(
            f"data {str(folder)!r}: images have different sizes {sorted(sizes)[:3]}; resize "
            "them to one size"
        )
    colour = any(im.mode == "RGB" for im in imgs)
    import numpy as np

    arrays = [np.asarray(im.convert("RGB") if colour else im, dtype=np.float32) for im in imgs]
    x = torch.from_numpy(np.stack(arrays)) / 255.0
    x = x.permute(0, 3, 1, 2) if colour else x.unsqueeze(1)
    labelled = all(label is not None for _, label in entries)
    y = torch.tensor([label for _, label in entries], dtype=torch.int64) if labelled else None
    return ImageData(str(folder), x.contiguous(), y, len(subdirs) if labelled else None)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
