"""MNIST's idx files (LeCun, Cortes & Burges), validated before torchvision reads them.

:func:`read_mnist` checks every header against the idx format and the file's size (magic
number, 28x28 images, truncation, image / label counts, labels in 0..9), so a corrupt file
is refused with one line naming ``data_root`` instead of an assertion or index error deep
inside torchvision or a trainer.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ppl_gen.core.errors import PplGenError

_MNIST_EXPECTED = (
    "a folder containing MNIST/raw/*-ubyte files (torchvision layout, e.g. ../shared/data/mnist)"
)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


#: MNIST's idx files (torchvision layout ``<root>/MNIST/raw``): name, magic number, shape.
MNIST_FILES = {
    (True, "images"): "train-images-idx3-ubyte",
    (True, "labels"): "train-labels-idx1-ubyte",
    (False, "images"): "t10k-images-idx3-ubyte",
    (False, "labels"): "t10k-labels-idx1-ubyte",
}
_IDX_MAGIC = {"images": 0x0803, "labels": 0x0801}  # unsigned bytes (0x08), 3 or 1 dims
MNIST_CLASSES = 10


def read_mnist(root: str | os.PathLike, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one MNIST split from ``<root>/MNIST/raw`` after validating its idx files.

    The headers are checked against the idx format (LeCun et al.) before torchvision reads
    the files: magic numbers ``0x00000803`` (images) / ``0x00000801`` (labels), 28x28
    images, file sizes equal to header + values, as many labels as images, labels in 0..9.

    Args:
        root: the folder containing ``MNIST/raw/*-ubyte`` (torchvision layout).
        train: the official training split (60,000 images) or the test split (10,000).

    Returns:
        ``(images, labels)``: ``(N, 28, 28)`` uint8 grey levels and ``(N,)`` int64 labels.

    Raises:
        PplGenError: naming ``data_root``: a missing folder or file, or a corrupt file
            (wrong magic number, header inconsistent with the file size, truncated, label
            count different from the image count, labels outside 0..9).
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise PplGenError(
            f"data_root {str(root_path)!r} does not exist: expected {_MNIST_EXPECTED}, "
            "or pass download to fetch MNIST into it"
        )
    raw = root_path / "MNIST" / "raw"
    missing = [n for n in MNIST_FILES.values() if not (raw / n).is_file()]
    if missing:
        hint = ""
        if root_path.name in ("MNIST", "raw"):
            hint = " (give the folder that contains MNIST/, not MNIST/ or raw/ itself)"
        raise PplGenError(
            f"data_root {str(root_path)!r} has no MNIST files ({', '.join(missing)} missing): "
            f"expected {_MNIST_EXPECTED}, or pass download to fetch them{hint}"
        )
    n_images = _check_idx(raw / MNIST_FILES[train, "images"], "images", root_path)
    n_labels = _check_idx(raw / MNIST_FILES[train, "labels"], "labels", root_path)
    if n_images != n_labels:
        raise PplGenError(
            f"data_root {str(root_path)!r}: {MNIST_FILES[train, 'images']} holds {n_images} "
            f"images but {MNIST_FILES[train, 'labels']} {n_labels} labels; the files are "
            "corrupt or from different sets (re-extract MNIST)"
        )
    from torchvision.datasets import MNIST

    try:
        dataset = MNIST(str(root_path), train=train, download=False)
    except (RuntimeError, OSError, ValueError, TypeError, AssertionError) as exc:
        raise PplGenError(
            f"data_root {str(root_path)!r}: cannot read MNIST ({_one_line(exc)})"
        ) from None
    labels = dataset.targets.to(torch.int64)
    bad = (labels < 0) | (labels >= MNIST_CLASSES)
    if bool(bad.any()):
        first = int(labels[bad][0])
        raise PplGenError(
            f"data_root {str(root_path)!r}: {MNIST_FILES[train, 'labels']} has {int(bad.sum())} "
            f"label(s) outside 0..{MNIST_CLASSES - 1} (e.g. {first}); the file is corrupt "
            "(re-extract MNIST)"
        )
    return dataset.data.to(torch.uint8), labels


def _check_idx(path: Path, what: str, root: Path) -> int:
    """Validate one idx file's header against its size; return the number of items."""
    where = f"data_root {str(root)!r}: {path.name}"
    ndim = 3 if what == "images" else 1
    size = path.stat().st_size
    header_bytes = 4 * (ndim + 1)
    if size < header_bytes:
        raise PplGenError(
            f"{where} is {size} bytes, shorter than an idx header; the file is corrupt "
            "(re-extract MNIST)"
        )
    with open(path, "rb") as fh:
        header = np.frombuffer(fh.read(header_bytes), dtype=">u4")
    magic, dims = int(header[0]), [int(d) for d in header[1:]]
    if magic != _IDX_MAGIC[what]:
        raise PplGenError(
            f"{where}: magic number 0x{magic:08x}, expected 0x{_IDX_MAGIC[what]:08x} (idx "
            f"{what}, unsigned bytes); not an MNIST {what} file or corrupt (re-extract MNIST)"
        )
    if what == "images" and dims[1:] != [28, 28]:
        raise PplGenError(f"{where}: images are {dims[1]}x{dims[2]}, MNIST's are 28x28")
    expected = header_bytes + int(np.prod(dims, dtype=np.int64))
    if size != expected:
        state = "truncated" if size < expected else "longer than its header says"
        raise PplGenError(
            f"{where}: the header announces {dims[0]} {what} ({expected} bytes) but the file "
            f"has {size} bytes ({state}; re-extract MNIST)"
        )
    return dims[0]


def download_mnist(root: Path) -> None:
    from torchvision.datasets import MNIST

    try:
        for train in (True, False):
            MNIST(str(root), train=train, download=True)
    except (RuntimeError, OSError) as exc:
        raise PplGenError(
            f"data_root {str(root)!r}: downloading MNIST failed ({_one_line(exc)})"
        ) from None
