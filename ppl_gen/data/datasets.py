"""Datasets: real images as flat float tensors, split reproducibly, binarised on request.

Every dataset is returned as a :class:`DataSplits`: three ``(n, D)`` float32 tensors
(train / validation / test), optional int64 labels, and the image shape needed to draw the
rows as pictures.  Data is small enough to live on the accelerator whole, so the trainers
index it with :func:`iterate_minibatches` instead of going through a ``DataLoader``.

Sources:

* ``"digits"`` -- the 1,797 real 8x8 handwritten digits bundled with scikit-learn
  (``sklearn.datasets.load_digits``, UCI optical recognition of handwritten digits), grey
  levels 0..16 scaled to [0, 1].  Needs no download.
* ``"mnist"`` -- MNIST (LeCun, Cortes & Burges) read with ``torchvision.datasets.MNIST`` from
  a folder in torchvision layout (``<root>/MNIST/raw/*-ubyte``); grey levels 0..255 scaled to
  [0, 1].  The official test set is the test split.
* a ``.npy`` / ``.npz`` file of the user's own data, used as is.

Binarisation (``binarize=``) follows the two conventions of the deep generative model
literature: *static* -- every image replaced once by a fixed Bernoulli sample (Larochelle &
Murray 2011) -- and *dynamic* -- training images resampled every epoch
(:func:`binarize_batch`) while the evaluation images stay fixed, so that test
log-likelihoods of different runs are computed on the same binary images.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ppl_gen.core.device import resolve_device, to_device
from ppl_gen.core.errors import PplGenError, require, require_positive_int

DATASETS = ("digits", "mnist")
BINARIZE_MODES = ("dynamic", "static", "none")
ARRAY_SUFFIXES = (".npy", ".npz")

_DATA_CHOICES = "digits, mnist, or a .npy/.npz file path"
_MNIST_EXPECTED = (
    "a folder containing MNIST/raw/*-ubyte files (torchvision layout, e.g. ../shared/data/mnist)"
)
# Stream numbers mixed with the seed, so the split permutation and the fixed binarisation of
# each split use independent random streams (and a split's fixed binary images are the same
# under "static" and "dynamic").
_SPLIT_STREAM = {"train": 1, "val": 2, "test": 3}


@dataclass(frozen=True, eq=False, repr=False)
class DataSplits:
    """A dataset split into train / validation / test, rows flattened to vectors.

    Attributes:
        name: ``"digits"``, ``"mnist"`` or the file name of a user array (``"x.npz"``).
        train: ``(n_train, D)`` float32.  Values in [0, 1] for the built-in datasets (grey
            levels; exactly {0, 1} after static binarisation); user arrays are kept as given.
        val: ``(n_val, D)`` float32, same value convention (binary under ``"dynamic"`` too).
        test: ``(n_test, D)`` float32, same value convention (binary under ``"dynamic"`` too).
        train_labels: ``(n_train,)`` int64 class labels, or ``None`` for unlabelled data.
        val_labels: ``(n_val,)`` int64 or ``None``.
        test_labels: ``(n_test,)`` int64 or ``None``.
        image_shape: shape of one row as an image, ``(8, 8)`` for digits, ``(28, 28)`` for
            MNIST, ``(H, W)`` or ``(D,)`` for user arrays; ``prod(image_shape) == D``.
        binarize: the binarisation mode applied: ``"none"``, ``"static"`` or ``"dynamic"``.
    """

    name: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None
    val_labels: torch.Tensor | None
    test_labels: torch.Tensor | None
    image_shape: tuple[int, ...]
    binarize: str

    @property
    def data_dim(self) -> int:
        """``D``, the number of values per row (784 for MNIST, 64 for digits)."""
        return int(self.train.shape[1])

    @property
    def device(self) -> torch.device:
        """Device holding the tensors."""
        return self.train.device

    def to(self, device: torch.device | str) -> DataSplits:
        """Return a copy with every tensor (data and labels) on ``device``.

        Args:
            device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a
                :class:`torch.device` (resolved by :func:`ppl_gen.core.device.resolve_device`).

        Host-to-GPU copies go through pinned (page-locked) memory, asynchronously.

        Raises:
            PplGenError: if ``device`` is not accepted or not available.
        """
        dev = resolve_device(device)
        fields = ("train", "val", "test", "train_labels", "val_labels", "test_labels")
        return replace(self, **{f: _to(getattr(self, f), dev) for f in fields})

    def __repr__(self) -> str:
        def shape(t: torch.Tensor | None) -> str:
            return "None" if t is None else "x".join(str(s) for s in t.shape)

        return (
            f"DataSplits(name={self.name!r}, train={shape(self.train)}, "
            f"val={shape(self.val)}, test={shape(self.test)}, "
            f"labelled={self.train_labels is not None}, image_shape={self.image_shape}, "
            f"binarize={self.binarize!r}, device={self.device})"
        )


def default_data_root() -> Path | None:
    """``Path("../shared/data/mnist")`` if that folder exists relative to the working
    directory, else ``None``.

    A convenience for messages and tests only: :func:`load_dataset` never falls back to it.
    """
    path = Path("..") / "shared" / "data" / "mnist"
    return path if path.is_dir() else None


def load_dataset(
    name: str | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    binarize: str = "none",
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    n_train: int | None = None,
    n_test: int | None = None,
) -> DataSplits:
    """Load a dataset, split it reproducibly and optionally binarise it.

    Args:
        name: ``"digits"`` (scikit-learn's 1,797 8x8 digits, /16 to [0, 1]), ``"mnist"``
            (torchvision MNIST, /255 to [0, 1], 784 values per row) or the path of a
            ``.npy`` / ``.npz`` file.  A ``.npy`` holds the data array; a ``.npz`` holds it
            under key ``x`` (or as its only array) and optionally int labels ``y`` of shape
            ``(N,)``.  The data array must be ``(N, D)`` (``image_shape = (D,)``) or
            ``(N, H, W)`` (``image_shape = (H, W)``, rows flattened); its values are used as
            they are (not rescaled) and must be finite.
        root: MNIST only (required there): the folder passed to torchvision, containing
            ``MNIST/raw/*-ubyte``.  Ignored for the other sources.
        download: MNIST only: let torchvision download the files into ``root``.
        binarize: ``"none"`` keeps the values; ``"static"`` replaces every split once by a
            Bernoulli(x) sample drawn with a generator seeded by ``seed``; ``"dynamic"`` keeps
            train as grey-level probabilities (the trainer resamples it each epoch with
            :func:`binarize_batch`) and binarises val and test statically (fixed evaluation
            images, identical to the ``"static"`` ones for the same seed).  Binarisation
            needs values in [0, 1].
        seed: non-negative integer seeding the split permutation and the fixed binarisation.
            Same seed, same splits and same binary images.
        val_fraction: fraction of the (training) rows held out as the validation split,
            in [0, 1).
        test_fraction: fraction of rows held out as the test split, in [0, 1), with
            ``val_fraction + test_fraction < 1``.  Ignored for MNIST, whose test split is the
            official test set (``val_fraction`` then splits the official training set).
        n_train: keep only the first ``n_train`` rows of the (shuffled) train split.
        n_test: keep only the first ``n_test`` rows of the test split.

    Returns:
        The :class:`DataSplits` on CPU (move it with :meth:`DataSplits.to`).  Split sizes:
        ``round(N * test_fraction)`` test, ``round(N * val_fraction)`` validation, the rest
        train (MNIST: official test set; ``round(N_train * val_fraction)`` validation).

    Raises:
        PplGenError: unknown ``name`` or ``binarize``; a missing or unreadable array file, an
            array of the wrong rank or dtype, or non-finite values (``--data``); MNIST without
            ``root`` or with a folder lacking the files (``--data-root``); fractions out of
            range (``--val-fraction`` / ``--test-fraction``); ``n_train`` / ``n_test`` not a
            positive integer or larger than the split (``--n-train`` / ``--n-test``); a bad
            ``seed`` (``--seed``); binarisation of values outside [0, 1] (``--binarize``); a
            split that leaves no training rows.
    """
    name_str = os.fspath(name) if isinstance(name, os.PathLike) else name
    if not isinstance(name_str, str):
        raise PplGenError(f"data must be one of {_DATA_CHOICES}, got {name!r}")
    key = name_str.strip().lower()
    if binarize not in BINARIZE_MODES:
        raise PplGenError(f"binarize must be one of {', '.join(BINARIZE_MODES)}, got {binarize!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise PplGenError(f"seed must be a non-negative integer, got {seed!r}")
    val_fraction = _check_fraction("val_fraction", val_fraction)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    if n_train is not None:
        require_positive_int("n_train", n_train)
    if n_test is not None:
        require_positive_int("n_test", n_test)

    if key == "mnist":
        splits = _load_mnist(root, download=download, seed=seed, val_fraction=val_fraction)
    elif key == "digits" or key.endswith(ARRAY_SUFFIXES):
        if val_fraction + test_fraction >= 1:
            raise PplGenError(
                "val_fraction + test_fraction must be < 1 (some rows must remain for "
                f"training), got {val_fraction} + {test_fraction}"
            )
        if key == "digits":
            x, y, image_shape, label = _read_digits()
        else:
            x, y, image_shape, label = _read_array_file(Path(name_str.strip()))
        splits = _split(x, y, seed, val_fraction, test_fraction, label, image_shape)
    else:
        raise PplGenError(f"data must be one of {_DATA_CHOICES}, got {name_str!r}")

    splits = _binarize_splits(splits, binarize, seed)
    return _truncate(splits, n_train, n_test)


def _to(t: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """``t`` on ``device``; CPU -> CUDA through pinned memory (non-blocking copy)."""
    if t is None or t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return to_device(t, device)


def binarize_batch(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw a binary sample ``b ~ Bernoulli(x)`` elementwise (dynamic binarisation).

    Args:
        x: tensor of probabilities in [0, 1], any shape, floating dtype, any device.  The
            range is not checked here (that would force a device sync per batch):
            :func:`load_dataset` has checked it when ``binarize`` was requested.
        generator: optional :class:`torch.Generator` for reproducible samples.  It must live
            on ``x``'s device (``torch.Generator(device=x.device)``); ``None`` uses torch's
            global generator of that device.

    Returns:
        Tensor of the same shape, dtype and device as ``x`` holding exactly 0.0 or 1.0.

    Raises:
        PplGenError: if ``generator`` is on another device type than ``x``.
    """
    if generator is not None and generator.device.type != x.device.type:
        raise PplGenError(
            f"binarize_batch: the generator is on {generator.device.type} but the data is on "
            f"{x.device}; create it with torch.Generator(device=x.device)"
        )
    return torch.bernoulli(x, generator=generator)


def iterate_minibatches(
    n: int,
    batch_size: int,
    *,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    drop_last: bool = False,
) -> Iterator[torch.Tensor]:
    """Yield index minibatches covering ``range(n)`` once (one epoch).

    The trainer indexes its on-device data tensor with them (``x[idx]``), which is much
    faster than a ``DataLoader`` for data that fits in memory.  The permutation is drawn on
    CPU with the (CPU) ``generator`` and then moved, so a given seed gives the same batches
    on every device.

    Args:
        n: number of rows, >= 1.
        batch_size: rows per batch, >= 1; the last batch is smaller when it does not divide
            ``n`` (unless ``drop_last``).
        shuffle: a random permutation of ``range(n)`` (else ``0, 1, ..., n-1`` in order).
        generator: a CPU :class:`torch.Generator` for the permutation; ``None`` uses torch's
            global CPU generator.
        device: device of the yielded index tensors.
        drop_last: skip the final incomplete batch (yields nothing if ``n < batch_size``).

    Yields:
        int64 tensors of shape ``(batch,)`` on ``device``; together (without ``drop_last``)
        every index in ``range(n)`` exactly once.

    Raises:
        PplGenError: if ``n`` or ``batch_size`` is not a positive integer, or ``generator``
            is not a CPU generator.  Raised on the call, before iteration starts.
    """
    require_positive_int("n", n)
    require_positive_int("batch_size", batch_size)
    require(
        generator is None or generator.device.type == "cpu",
        "iterate_minibatches: the generator must be a CPU torch.Generator "
        f"(the permutation is drawn on CPU), got one on {getattr(generator, 'device', None)}",
    )
    device = torch.device(device)
    if shuffle:
        order = torch.randperm(n, generator=generator).to(device)
    else:
        order = torch.arange(n, device=device)
    stop = n - n % batch_size if drop_last else n
    return _batches(order, batch_size, stop)


def _batches(order: torch.Tensor, batch_size: int, stop: int) -> Iterator[torch.Tensor]:
    for start in range(0, stop, batch_size):
        yield order[start : min(start + batch_size, stop)]


# --------------------------------------------------------------------------- helpers


def _check_fraction(flag: str, value: float) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not 0 <= value < 1:
        raise PplGenError(f"{flag} must be a number in [0, 1), got {value!r}")
    return float(value)


def _generator(seed: int, stream: int) -> torch.Generator:
    """CPU generator for one random stream of ``seed`` (independent across streams)."""
    state = np.random.SeedSequence([seed, stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _check_finite(x: torch.Tensor, label: str) -> None:
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise PplGenError(
            f"data {label}: {bad} non-finite value(s) (NaN or inf) in the data; "
            "remove or impute them first"
        )


def _read_digits() -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...], str]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    _check_finite(x, "digits")
    return x, y, (8, 8), "digits"


def _read_array_file(path: Path) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, ...], str]:
    label = path.name
    if not path.is_file():
        raise PplGenError(f"data {str(path)!r}: no such file (expected a .npy or .npz array)")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                keys = list(loaded.files)
                if "x" not in keys and len(keys) != 1:
                    raise PplGenError(
                        f"data {label}: a .npz must hold the data under key 'x' (or as its "
                        f"only array), found keys {keys}"
                    )
                x_arr = loaded["x"] if "x" in keys else loaded[keys[0]]
                y_arr = loaded["y"] if "x" in keys and "y" in keys else None
        else:
            x_arr, y_arr = loaded, None
    except (OSError, ValueError, EOFError) as exc:
        if isinstance(exc, PplGenError):
            raise
        reason = _one_line(exc)
        if "pickle" in reason:  # np.load's message for anything that is not .npy/.npz
            reason = "not a .npy/.npz file, or it holds Python objects, which are not accepted"
        raise PplGenError(f"data {label}: cannot read it as a numpy array ({reason})") from None

    x_arr = np.asarray(x_arr)
    if x_arr.ndim not in (2, 3):
        raise PplGenError(
            f"data {label}: the array must have shape (N, D) or (N, H, W), "
            f"got shape {tuple(x_arr.shape)}"
        )
    if not (np.issubdtype(x_arr.dtype, np.number) or x_arr.dtype == np.bool_) or np.issubdtype(
        x_arr.dtype, np.complexfloating
    ):
        raise PplGenError(f"data {label}: the array must be real numbers, got dtype {x_arr.dtype}")
    n = x_arr.shape[0]
    require(n >= 1 and x_arr[0].size >= 1, f"data {label}: the array is empty")
    image_shape = tuple(int(s) for s in x_arr.shape[1:])
    if np.issubdtype(x_arr.dtype, np.floating):
        _check_finite(torch.as_tensor(x_arr.astype(np.float64)), label)
    with np.errstate(over="ignore"):
        x = torch.as_tensor(x_arr.astype(np.float32, copy=False).reshape(n, -1))
    overflow = int((~torch.isfinite(x)).sum())
    if overflow:
        raise PplGenError(
            f"data {label}: {overflow} value(s) too large for float32 (|x| > 3.4e38); "
            "rescale the data first"
        )
    y = None if y_arr is None else _labels(np.asarray(y_arr), n, label)
    return x, y, image_shape, label


def _labels(y: np.ndarray, n: int, label: str) -> torch.Tensor:
    if y.shape != (n,):
        raise PplGenError(
            f"data {label}: labels 'y' must have shape ({n},) to match the data, "
            f"got {tuple(y.shape)}"
        )
    integral = np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_
    if not integral and np.issubdtype(y.dtype, np.floating):
        integral = bool(np.all(np.isfinite(y)) and np.all(y == np.round(y)))
    if not integral:
        raise PplGenError(f"data {label}: labels 'y' must be integers, got dtype {y.dtype}")
    if y.size and int(y.min()) < 0:
        raise PplGenError(
            f"data {label}: labels 'y' must be class indices >= 0, got {int(y.min())}"
        )
    return torch.as_tensor(y.astype(np.int64))


def _split(
    x: torch.Tensor,
    y: torch.Tensor | None,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    label: str,
    image_shape: tuple[int, ...],
) -> DataSplits:
    n = x.shape[0]
    n_test = int(n * test_fraction + 0.5)
    n_val = int(n * val_fraction + 0.5)
    n_tr = n - n_test - n_val
    if n_tr < 1:
        raise PplGenError(
            f"data {label}: {n} rows leave no training rows after holding out {n_val} "
            f"validation and {n_test} test rows; lower val_fraction / test_fraction"
        )
    if (val_fraction > 0 and n_val < 1) or (test_fraction > 0 and n_test < 1):
        need = next(
            m
            for m in range(2, 10**6)
            if (val_fraction == 0 or int(m * val_fraction + 0.5) >= 1)
            and (test_fraction == 0 or int(m * test_fraction + 0.5) >= 1)
            and m - int(m * val_fraction + 0.5) - int(m * test_fraction + 0.5) >= 1
        )
        raise PplGenError(
            f"data {label}: {n} row(s) are too few for the train / validation / test splits "
            f"({n_tr} / {n_val} / {n_test} rows at val_fraction {val_fraction:g}, "
            f"test_fraction {test_fraction:g}); at least {need} rows are needed"
        )
    perm = torch.randperm(n, generator=_generator(seed, 0))
    idx_test, idx_val, idx_train = (
        perm[:n_test],
        perm[n_test : n_test + n_val],
        perm[n_test + n_val :],
    )

    def take(t: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor | None:
        return None if t is None else t[idx]

    return DataSplits(
        name=label,
        train=x[idx_train],
        val=x[idx_val],
        test=x[idx_test],
        train_labels=take(y, idx_train),
        val_labels=take(y, idx_val),
        test_labels=take(y, idx_test),
        image_shape=image_shape,
        binarize="none",
    )


def _load_mnist(
    root: str | os.PathLike | None, *, download: bool, seed: int, val_fraction: float
) -> DataSplits:
    if root is None:
        raise PplGenError(
            "data_root is required for mnist: a folder containing MNIST/raw (torchvision "
            "layout), or pass download"
        )
    from ppl_gen.data.mnist import download_mnist, read_mnist

    if download:
        download_mnist(Path(root))
    train_images, train_labels = read_mnist(root, train=True)
    test_images, test_labels = read_mnist(root, train=False)

    def flat(images: torch.Tensor) -> torch.Tensor:
        return images.reshape(images.shape[0], -1).to(torch.float32) / 255.0

    x_train, y_train = flat(train_images), train_labels
    x_test, y_test = flat(test_images), test_labels
    n = x_train.shape[0]
    n_val = int(n * val_fraction + 0.5)
    require(
        n - n_val >= 1,
        f"val_fraction {val_fraction} leaves no MNIST training rows out of {n}",
    )
    require(
        val_fraction == 0 or n_val >= 1,
        f"data_root: {n} MNIST training images are too few for a validation split at "
        f"val_fraction {val_fraction:g}",
    )
    perm = torch.randperm(n, generator=_generator(seed, 0))
    idx_val, idx_train = perm[:n_val], perm[n_val:]
    return DataSplits(
        name="mnist",
        train=x_train[idx_train],
        val=x_train[idx_val],
        test=x_test,
        train_labels=y_train[idx_train],
        val_labels=y_train[idx_val],
        test_labels=y_test,
        image_shape=(28, 28),
        binarize="none",
    )


def _binarize_splits(splits: DataSplits, mode: str, seed: int) -> DataSplits:
    if mode == "none":
        return splits
    for split in ("train", "val", "test"):
        t = getattr(splits, split)
        if t.numel() and (float(t.min()) < 0 or float(t.max()) > 1):
            raise PplGenError(
                f"binarize {mode} needs data in [0, 1] (Bernoulli probabilities), but "
                f"{splits.name} {split} values span [{float(t.min()):g}, {float(t.max()):g}]; "
                "rescale it first (e.g. divide 0..255 images by 255) or use binarize none"
            )
    names = ("val", "test") if mode == "dynamic" else ("train", "val", "test")
    fixed = {
        s: torch.bernoulli(getattr(splits, s), generator=_generator(seed, _SPLIT_STREAM[s]))
        for s in names
    }
    return replace(splits, binarize=mode, **fixed)


def _truncate(splits: DataSplits, n_train: int | None, n_test: int | None) -> DataSplits:
    changes: dict[str, torch.Tensor | None] = {}
    for flag, split, n in (("n_train", "train", n_train), ("n_test", "test", n_test)):
        if n is None:
            continue
        available = getattr(splits, split).shape[0]
        if n > available:
            raise PplGenError(f"{flag} {n} exceeds the {available} {split} rows of {splits.name}")
        changes[split] = getattr(splits, split)[:n]
        labels = getattr(splits, f"{split}_labels")
        changes[f"{split}_labels"] = None if labels is None else labels[:n]
    return replace(splits, **changes) if changes else splits


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
