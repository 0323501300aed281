"""MNIST-M: MNIST digits blended over patches of natural colour photographs.

The target domain of the digits experiment of Ganin & Lempitsky (ICML 2015) and Ganin et
al. (JMLR 2016, section 5.2.1): every MNIST digit is combined with a random 28x28 crop of
a random BSDS500 photograph by the per-channel absolute difference

    out[c, i, j] = |crop[c, i, j] - digit[i, j]|          (Ganin et al. 2016, sec. 5.2.1)

with both images on the same scale ([0, 255] as uint8 here, returned as float32 / 255).
The grey-level digit is used on all three channels.

Which images are used:

* ``split="train"`` blends the MNIST *training* digits, ``split="test"`` the official MNIST
  *test* digits (10,000), in their file order, so MNIST-M image ``i`` carries the label of
  MNIST image ``i``.
* Both splits crop from the photographs of one folder (``bsds_root``; by default the 200
  BSDS500 training photographs in ``../shared/data/bsds500/train``, as in Ganin's recipe),
  with independent random streams derived from ``seed`` and the split.  Photographs are
  read in sorted file-name order (``*.jpg``, ``*.jpeg``, ``*.png``).

The build is deterministic given ``seed``, the MNIST files and the photographs, and takes
about a second for 24k digits (one vectorised gather).  The result is cached on disk as
uint8 in ``cache_dir`` (default ``$XDG_CACHE_HOME/ppl_gen/mnistm`` or
``~/.cache/ppl_gen/mnistm``), one file per split, named by the seed and a fingerprint of
the source files (name, size and modification time of every MNIST and photograph file),
written atomically: a changed photograph or MNIST file gives a new cache entry.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ppl_gen.core.errors import PplGenError
from ppl_gen.core.io import torch_save
from ppl_gen.data.datasets import default_data_root

CROP = 28
SPLITS = ("train", "test")
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
_STREAM = {"train": 101, "test": 202}
_CACHE_VERSION = "mnistm-v2"


def default_bsds_root() -> Path | None:
    """``Path("../shared/data/bsds500/train")`` if that folder exists relative to the working
    directory, else ``None``."""
    path = Path("..") / "shared" / "data" / "bsds500" / "train"
    return path if path.is_dir() else None


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ppl_gen/mnistm``, or ``~/.cache/ppl_gen/mnistm`` without it."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ppl_gen" / "mnistm"


def photo_files(bsds_root: str | os.PathLike) -> list[Path]:
    """The photographs (``*.jpg``, ``*.jpeg``, ``*.png``) in ``bsds_root``, sorted by name.

    Raises:
        PplGenError: naming ``bsds_root`` if the folder does not exist or holds no photos.
    """
    root = Path(bsds_root)
    if not root.is_dir():
        raise PplGenError(
            f"bsds_root {str(root)!r} is not a folder: expected a folder of natural colour "
            "photographs (e.g. the BSDS500 training images, ../shared/data/bsds500/train)"
        )
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    if not files:
        raise PplGenError(
            f"bsds_root {str(root)!r} holds no photographs ({', '.join(PHOTO_SUFFIXES)})"
        )
    return files


def read_photos(files: Sequence[Path], crop: int = CROP) -> list[torch.Tensor]:
    """Decode photographs with PIL to ``(3, H, W)`` uint8 RGB tensors (greyscale is
    replicated).

    Raises:
        PplGenError: naming ``bsds_root`` and the file if one cannot be decoded or is
            smaller than ``crop`` x ``crop`` pixels.
    """
    import numpy as np
    from PIL import Image

    photos = []
    for path in files:
        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
            image = torch.from_numpy(rgb.copy()).permute(2, 0, 1)
        except Exception as exc:  # PIL raises OSError / ValueError variants
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PplGenError(
                f"bsds_root: cannot read photograph {str(path)!r} ({reason[:100]})"
            ) from None
        if image.shape[1] < crop or image.shape[2] < crop:
            raise PplGenError(
                f"bsds_root: photograph {str(path)!r} is {image.shape[2]}x{image.shape[1]} "
                f"pixels, smaller than the {crop}x{crop} crop"
            )
        photos.append(image)
    return photos


def blend_digits(
    digits: torch.Tensor, photos: Sequence[torch.Tensor], generator: torch.Generator
) -> torch.Tensor:
    """Ganin's MNIST-M blend: ``|crop - digit|`` per channel, one random crop per digit.

    Args:
        digits: ``(N, H, W)`` uint8 grey-level digits (0..255).
        photos: non-empty sequence of ``(3, H_p, W_p)`` uint8 photographs, each at least
            ``H`` x ``W``.
        generator: CPU generator drawing, per digit, the photograph (uniform) and the crop's
            top-left corner (uniform over the valid positions).

    Returns:
        ``(N, 3, H, W)`` uint8 blended images.

    Raises:
        PplGenError: no photographs, or one smaller than the digits.
    """
    if not photos:
        raise PplGenError("bsds_root: no photographs to crop from")
    n, h, w = digits.shape
    heights = torch.tensor([p.shape[1] for p in photos])
    widths = torch.tensor([p.shape[2] for p in photos])
    if int(heights.min()) < h or int(widths.min()) < w:
        raise PplGenError(f"bsds_root: every photograph must be at least {w}x{h} pixels")
    # One padded (P, Hmax, Wmax, 3) stack, so all crops are one advanced-indexing gather.
    stack = torch.zeros(len(photos), int(heights.max()), int(widths.max()), 3, dtype=torch.uint8)
    for i, photo in enumerate(photos):
        stack[i, : photo.shape[1], : photo.shape[2]] = photo.permute(1, 2, 0)
    which = torch.randint(len(photos), (n,), generator=generator)
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    top = (u[:, 0] * (heights[which] - h + 1)).long()
    left = (u[:, 1] * (widths[which] - w + 1)).long()
    rows = top[:, None] + torch.arange(h)  # (N, H)
    cols = left[:, None] + torch.arange(w)  # (N, W)
    crops = stack[which[:, None, None], rows[:, :, None], cols[:, None, :]]  # (N, H, W, 3)
    blended = (crops.to(torch.int16) - digits.to(torch.int16)[..., None]).abs()
    return blended.to(torch.uint8).permute(0, 3, 1, 2).contiguous()


def _read_mnist(mnist_root: str | os.PathLike, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from ppl_gen.data.mnist import read_mnist  # validates the idx files

    return read_mnist(mnist_root, train)


def _fingerprint(files: Sequence[Path]) -> str:
    digest = hashlib.sha256(_CACHE_VERSION.encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


def _mnist_files(mnist_root: str | os.PathLike, train: bool) -> list[Path]:
    raw = Path(mnist_root) / "MNIST" / "raw"
    prefix = "train" if train else "t10k"
    return sorted(p for p in raw.glob(f"{prefix}-*") if p.is_file())


def load_mnistm(
    mnist_root: str | os.PathLike | None = None,
    bsds_root: str | os.PathLike | None = None,
    *,
    split: str = "train",
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Build (or read from the cache) one split of MNIST-M.

    Args:
        mnist_root: folder with ``MNIST/raw/*-ubyte`` (torchvision layout); default
            :func:`ppl_gen.data.datasets.default_data_root` (``../shared/data/mnist``).
        bsds_root: folder of colour photographs to crop from; default
            ``../shared/data/bsds500/train`` relative to the working directory.
        split: ``"train"`` (MNIST training digits) or ``"test"`` (MNIST test digits).
        seed: non-negative integer; same seed and sources, same images.
        cache_dir: folder for the cached uint8 tensors; default :func:`default_cache_dir`.

    Returns:
        ``(x, y)``: ``x`` ``(N, 3, 28, 28)`` float32 in [0, 1] (RGB), ``y`` ``(N,)`` int64
        digit labels.

    Raises:
        PplGenError: naming the parameter: bad ``split`` or ``seed``; no MNIST folder
            (``data_root``, the name :func:`ppl_gen.data.domains.load_domain` and the CLI
            give ``mnist_root``); a missing or empty photo folder, an unreadable photograph
            or one smaller than 28x28 (``bsds_root``).
    """
    if split not in SPLITS:
        raise PplGenError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise PplGenError(f"seed must be a non-negative integer, got {seed!r}")
    if mnist_root is None:
        mnist_root = default_data_root()
        if mnist_root is None:
            raise PplGenError(
                "data_root is required for MNIST-M: a folder containing MNIST/raw "
                "(torchvision layout)"
            )
    if bsds_root is None:
        bsds_root = default_bsds_root()
        if bsds_root is None:
            raise PplGenError(
                "bsds_root is required for MNIST-M: a folder of natural colour photographs "
                "(the BSDS500 training images); ../shared/data/bsds500/train does not exist"
            )
    train = split == "train"
    files = photo_files(bsds_root)
    mnist_files = _mnist_files(mnist_root, train)
    key = _fingerprint(mnist_files + files)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"mnistm-{split}-seed{seed}-{key}.pt"
    if path.is_file():
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            return cached["x"].to(torch.float32) / 255.0, cached["y"]
        except Exception:  # a corrupt cache entry is rebuilt
            pass
    digits, labels = _read_mnist(mnist_root, train)
    photos = read_photos(files)
    generator = torch.Generator().manual_seed(seed * 1000 + _STREAM[split])
    x = blend_digits(digits, photos, generator)
    try:
        torch_save(path, {"x": x, "y": labels})
    except OSError:  # a read-only cache folder only costs the rebuild next time
        pass
    return x.to(torch.float32) / 255.0, labels


class MNISTM(Dataset):
    """MNIST-M as a torchvision-style dataset: ``dataset[i] -> (image, label)``.

    ``image`` is a ``(3, 28, 28)`` float32 tensor in [0, 1] (after ``transform`` if given),
    ``label`` an ``int`` (after ``target_transform``).  Arguments as in
    :func:`load_mnistm`; ``train=True`` selects the training split.
    """

    def __init__(
        self,
        mnist_root: str | os.PathLike | None = None,
        bsds_root: str | os.PathLike | None = None,
        *,
        train: bool = True,
        seed: int = 0,
        cache_dir: str | os.PathLike | None = None,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
    ) -> None:
        split = "train" if train else "test"
        self.data, self.targets = load_mnistm(
            mnist_root, bsds_root, split=split, seed=seed, cache_dir=cache_dir
        )
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index: int):
        image, label = self.data[index], int(self.targets[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return image, label
