"""Small broken inputs for ``tests/test_bad_inputs.py``: fake MNIST idx files (valid and
corrupted), tiny ``.npy`` datasets and crafted checkpoints.

MNIST idx format (LeCun et al.): a big-endian header -- magic ``0x0000TTNN`` (``TT = 0x08``
unsigned bytes, ``NN`` the number of dimensions: 3 for images, 1 for labels), then one
uint32 size per dimension -- followed by the values.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

N_TRAIN, N_TEST = 40, 12
FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def idx_bytes(array: np.ndarray, *, magic: int | None = None, dims=None) -> bytes:
    """``array`` (uint8) in idx format; ``magic`` / ``dims`` override the header."""
    array = np.asarray(array, dtype=np.uint8)
    dims = list(array.shape) if dims is None else list(dims)
    magic = (0x08 << 8 | array.ndim) if magic is None else magic
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)
    return header + array.tobytes()


def write_mnist(root: Path, corrupt: str | None = None) -> Path:
    """Write a tiny MNIST in torchvision layout (``root/MNIST/raw``) and return ``root``.

    ``corrupt`` breaks one thing: ``magic`` (wrong magic number), ``truncated`` (file
    shorter than its header says), ``header`` (image count in the header larger than the
    data), ``count`` (labels and images disagree in number), ``labels99`` (a label of 99),
    ``shape`` (images of 27x28), ``empty`` (a zero-byte file), ``missing`` (no test labels).
    """
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        img = idx_bytes(images)
        lab = idx_bytes(labels)
        if split == "train":
            if corrupt == "magic":
                img = idx_bytes(images, magic=0x0000_0903)
            elif corrupt == "truncated":
                img = img[: len(img) // 2]
            elif corrupt == "header":
                img = idx_bytes(images, dims=(n + 5, 28, 28))
            elif corrupt == "count":
                lab = idx_bytes(labels[:-3])
            elif corrupt == "labels99":
                labels[3] = 99
                lab = idx_bytes(labels)
            elif corrupt == "shape":
                img = idx_bytes(images[:, :27, :])
            elif corrupt == "empty":
                img = b""
        (raw / FILES[split, "images"]).write_bytes(img)
        if not (split == "test" and corrupt == "missing"):
            (raw / FILES[split, "labels"]).write_bytes(lab)
    return root


CORRUPTIONS = ("magic", "truncated", "header", "count", "labels99", "shape", "empty", "missing")


def write_rows(path: Path, n: int, d: int = 16, labels: bool = False) -> Path:
    """A ``.npy`` (or ``.npz`` with ``y``) of ``n`` rows of ``d`` values in [0, 1]."""
    x = np.random.default_rng(0).uniform(size=(n, d)).astype(np.float32)
    if labels:
        np.savez(path, x=x, y=np.arange(n) % 10)
    else:
        np.save(path, x)
    return path
