"""Tests for ppl_gen.data.datasets: real datasets, seeded splits, binarisation, minibatches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ppl_gen.core.errors import PplGenError
from ppl_gen.data.datasets import (
    BINARIZE_MODES,
    DATASETS,
    DataSplits,
    binarize_batch,
    default_data_root,
    iterate_minibatches,
    load_dataset,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MNIST_ROOT = SHARED_DATA / "mnist"
N_DIGITS = 1797


def _rows(t: torch.Tensor) -> list[tuple[float, ...]]:
    return sorted(tuple(r) for r in t.tolist())


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def digits_raw() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().data / 16.0


@pytest.fixture
def id_array(tmp_path: Path) -> tuple[Path, int]:
    """A (N, 5) array whose first column is a unique row id, saved as .npy."""
    n = 200
    x = np.random.default_rng(0).uniform(size=(n, 5)).astype(np.float32)
    x[:, 0] = np.arange(n) / n
    path = tmp_path / "ids.npy"
    np.save(path, x)
    return path, n


@pytest.fixture(scope="module")
def mnist() -> DataSplits:
    if not (MNIST_ROOT / "MNIST" / "raw").is_dir():
        pytest.skip(
            "MNIST not found at ../shared/data/mnist; put MNIST/raw/*-ubyte there "
            "(torchvision layout) to run this test"
        )
    return load_dataset("mnist", root=MNIST_ROOT, val_fraction=0.1, seed=0)


# --------------------------------------------------------------------------- digits


def test_constants() -> None:
    assert DATASETS == ("digits", "mnist")
    assert set(BINARIZE_MODES) == {"dynamic", "static", "none"}


def test_digits_shapes_and_range(digits: DataSplits) -> None:
    assert digits.name == "digits"
    assert digits.data_dim == 64
    assert digits.image_shape == (8, 8)
    assert digits.binarize == "none"
    sizes = [digits.train.shape[0], digits.val.shape[0], digits.test.shape[0]]
    assert sum(sizes) == N_DIGITS
    assert sizes == [N_DIGITS - 359 - 180, 180, 359]  # round(0.2 N) test, round(0.1 N) val
    for split in (digits.train, digits.val, digits.test):
        assert split.dtype == torch.float32
        assert split.shape[1] == 64
        assert float(split.min()) >= 0.0 and float(split.max()) <= 1.0
    assert float(digits.train.max()) == 1.0  # scaled by /16, not /255
    assert digits.train_labels is not None and digits.train_labels.dtype == torch.int64
    assert digits.train_labels.shape == (digits.train.shape[0],)
    assert set(digits.train_labels.tolist()) == set(range(10))


def test_digits_splits_partition_the_dataset(digits: DataSplits, digits_raw: np.ndarray) -> None:
    together = torch.cat([digits.train, digits.val, digits.test])
    assert _rows(together) == _rows(torch.as_tensor(digits_raw, dtype=torch.float32))


def test_digits_labels_follow_rows(digits: DataSplits, digits_raw: np.ndarray) -> None:
    from sklearn.datasets import load_digits

    target = load_digits().target
    lookup = {
        tuple(np.float32(r).tolist()): int(t)
        for r, t in zip(digits_raw.astype(np.float32), target, strict=True)
    }
    for x, y in ((digits.test, digits.test_labels), (digits.val, digits.val_labels)):
        for row, label in zip(x[:50].tolist(), y[:50].tolist(), strict=True):
            assert lookup[tuple(row)] == label


def test_split_is_seeded(digits: DataSplits) -> None:
    again = load_dataset("digits", seed=0)
    other = load_dataset("digits", seed=1)
    assert torch.equal(again.train, digits.train)
    assert torch.equal(again.test_labels, digits.test_labels)
    assert not torch.equal(other.train, digits.train)


def test_splits_are_disjoint(id_array: tuple[Path, int]) -> None:
    path, n = id_array
    s = load_dataset(str(path), val_fraction=0.25, test_fraction=0.25, seed=3)
    ids = [set(t[:, 0].mul(n).round().long().tolist()) for t in (s.train, s.val, s.test)]
    assert [len(i) for i in ids] == [100, 50, 50]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert ids[0] | ids[1] | ids[2] == set(range(n))


def test_truncation(digits: DataSplits) -> None:
    s = load_dataset("digits", seed=0, n_train=100, n_test=30)
    assert s.train.shape == (100, 64) and s.test.shape == (30, 64)
    assert s.train_labels.shape == (100,) and s.test_labels.shape == (30,)
    assert torch.equal(s.train, digits.train[:100])  # first n of the same seeded split
    assert s.val.shape == digits.val.shape


def test_to_device_and_repr(digits: DataSplits) -> None:
    moved = digits.to("cpu")
    assert moved.train.device.type == "cpu" and moved.test_labels.device.type == "cpu"
    assert "train=1258x64" in repr(digits)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_cuda(digits: DataSplits) -> None:
    moved = digits.to("cuda")
    assert moved.train.is_cuda and moved.val_labels.is_cuda
    assert digits.train.device.type == "cpu"  # original untouched
    assert torch.equal(moved.test.cpu(), digits.test)


# --------------------------------------------------------------------------- binarisation


def _is_binary(t: torch.Tensor) -> bool:
    return bool(((t == 0) | (t == 1)).all())


def test_static_binarisation_is_binary_and_seeded(digits: DataSplits) -> None:
    a = load_dataset("digits", binarize="static", seed=0)
    b = load_dataset("digits", binarize="static", seed=0)
    c = load_dataset("digits", binarize="static", seed=5)
    assert a.binarize == "static"
    for split in ("train", "val", "test"):
        assert _is_binary(getattr(a, split))
        assert torch.equal(getattr(a, split), getattr(b, split))
    assert not torch.equal(a.train, c.train)
    # A Bernoulli sample of the grey images: mean close to the grey mean, zeros stay zero.
    assert abs(float(a.train.mean()) - float(digits.train.mean())) < 0.01
    assert float(a.train[digits.train == 0].max()) == 0.0


def test_dynamic_binarisation(digits: DataSplits) -> None:
    dyn = load_dataset("digits", binarize="dynamic", seed=0)
    static = load_dataset("digits", binarize="static", seed=0)
    assert dyn.binarize == "dynamic"
    assert torch.equal(dyn.train, digits.train)  # still grey-level probabilities
    assert not _is_binary(dyn.train)
    assert _is_binary(dyn.val) and _is_binary(dyn.test)
    assert torch.equal(dyn.test, static.test)  # same fixed evaluation images as "static"


def test_binarize_batch() -> None:
    x = torch.rand(2000, 50, generator=torch.Generator().manual_seed(0))
    b = binarize_batch(x, torch.Generator().manual_seed(1))
    assert b.shape == x.shape and b.dtype == x.dtype and b.device == x.device
    assert _is_binary(b)
    assert abs(float(b.mean()) - float(x.mean())) < 0.01
    assert torch.equal(b, binarize_batch(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(b, binarize_batch(x, torch.Generator().manual_seed(2)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_binarize_batch_cuda() -> None:
    x = torch.rand(500, 40, device="cuda")
    b = binarize_batch(x, torch.Generator(device="cuda").manual_seed(0))
    assert b.is_cuda and _is_binary(b)
    with pytest.raises(PplGenError, match="generator"):
        binarize_batch(x, torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- array files


def test_npy_2d(id_array: tuple[Path, int]) -> None:
    path, n = id_array
    s = load_dataset(str(path))
    assert s.name == "ids.npy"
    assert s.image_shape == (5,) and s.data_dim == 5
    assert s.train.shape[0] + s.val.shape[0] + s.test.shape[0] == n
    assert s.train_labels is None and s.test_labels is None


def test_npz_images_with_labels(tmp_path: Path) -> None:
    x = np.random.default_rng(1).uniform(size=(60, 4, 3))
    y = np.arange(60) % 3
    path = tmp_path / "imgs.npz"
    np.savez(path, x=x, y=y)
    s = load_dataset(path, val_fraction=0.0, test_fraction=0.5, binarize="static")
    assert s.image_shape == (4, 3) and s.data_dim == 12
    assert s.train.shape == (30, 12) and s.val.shape == (0, 12)
    assert s.train_labels.dtype == torch.int64
    assert set(s.train_labels.tolist()) <= {0, 1, 2}
    assert _is_binary(s.train)


def test_npz_single_unnamed_array_values_kept(tmp_path: Path) -> None:
    x = np.arange(40 * 3, dtype=np.float64).reshape(40, 3) * 10.0  # not in [0, 1]
    path = tmp_path / "big.npz"
    np.savez(path, x)  # stored as arr_0
    s = load_dataset(str(path), val_fraction=0.0, test_fraction=0.0)
    assert s.train.shape == (40, 3)
    assert float(s.train.max()) == float(x.max())  # used as is, not rescaled


# --------------------------------------------------------------------------- bad input


def _save(tmp_path: Path, name: str, arr: np.ndarray) -> str:
    path = tmp_path / name
    np.save(path, arr)
    return str(path)


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"name": "xyz"}, "data"),
        ({"name": "digits", "binarize": "sometimes"}, "binarize"),
        ({"name": "digits", "val_fraction": 1.0}, "val_fraction"),
        ({"name": "digits", "val_fraction": -0.1}, "val_fraction"),
        ({"name": "digits", "test_fraction": float("nan")}, "test_fraction"),
        ({"name": "digits", "val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction"),
        ({"name": "digits", "n_train": 0}, "n_train"),
        ({"name": "digits", "n_test": 2.5}, "n_test"),
        ({"name": "digits", "n_train": 100_000}, "n_train"),
        ({"name": "digits", "seed": -1}, "seed"),
        ({"name": "mnist"}, "data_root"),
        ({"name": "missing.npz"}, "data"),
    ],
)
def test_bad_arguments(kwargs: dict, flag: str) -> None:
    with pytest.raises(PplGenError, match=flag) as info:
        load_dataset(**kwargs)
    assert "\n" not in str(info.value)


def test_unknown_name_message() -> None:
    with pytest.raises(PplGenError) as info:
        load_dataset("xyz")
    assert str(info.value) == (
        "data must be one of digits, mnist, or a .npy/.npz file path, got 'xyz'"
    )


def test_nan_data_reports_count(tmp_path: Path) -> None:
    x = np.ones((30, 4))
    x[0, 0], x[3, 2], x[7, 1] = np.nan, np.inf, -np.inf
    with pytest.raises(PplGenError, match=r"data .*3 non-finite"):
        load_dataset(_save(tmp_path, "nan.npy", x))


@pytest.mark.parametrize("shape", [(30,), (10, 2, 2, 2)])
def test_wrong_rank(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = _save(tmp_path, "rank.npy", np.zeros(shape))
    with pytest.raises(PplGenError, match=r"data .*\(N, D\) or \(N, H, W\)"):
        load_dataset(path)


def test_float32_overflow(tmp_path: Path) -> None:
    path = _save(tmp_path, "huge.npy", np.full((20, 3), 1e300))
    with pytest.raises(PplGenError, match=r"data .*60 value\(s\) too large for float32"):
        load_dataset(path)


def test_not_a_numpy_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_text("not an array")
    with pytest.raises(PplGenError, match=r"data junk.npz: cannot read it as a numpy array"):
        load_dataset(str(path))


def test_mnist_root_pointing_inside_layout() -> None:
    if not (MNIST_ROOT / "MNIST" / "raw").is_dir():
        pytest.skip("MNIST not found at ../shared/data/mnist; needed to test the layout hint")
    with pytest.raises(PplGenError, match=r"data_root .*contains MNIST/, not MNIST/"):
        load_dataset("mnist", root=MNIST_ROOT / "MNIST")


def test_binarize_needs_unit_range(tmp_path: Path) -> None:
    path = _save(tmp_path, "grey255.npy", np.full((20, 3), 255.0))
    with pytest.raises(PplGenError, match=r"binarize .*\[0, 1\]"):
        load_dataset(path, binarize="static")


def test_npz_without_x_key(tmp_path: Path) -> None:
    path = tmp_path / "two.npz"
    np.savez(path, a=np.zeros((5, 2)), b=np.zeros((5, 2)))
    with pytest.raises(PplGenError, match=r"data .*key 'x'"):
        load_dataset(str(path))


def test_mismatched_labels(tmp_path: Path) -> None:
    path = tmp_path / "lab.npz"
    np.savez(path, x=np.zeros((10, 2)), y=np.zeros(9, dtype=int))
    with pytest.raises(PplGenError, match=r"data .*labels"):
        load_dataset(str(path))


@pytest.mark.parametrize("make_root", [lambda p: p / "nowhere", lambda p: p])
def test_mnist_missing_files(tmp_path: Path, make_root) -> None:
    root = make_root(tmp_path)  # a folder that does not exist / exists without MNIST files
    with pytest.raises(PplGenError, match="data_root") as info:
        load_dataset("mnist", root=root)
    message = str(info.value)
    assert "MNIST/raw" in message and "download" in message and "\n" not in message


def test_default_data_root_is_existing_or_none() -> None:
    root = default_data_root()
    assert root is None or (root / "MNIST").is_dir()


# --------------------------------------------------------------------------- minibatches


@pytest.mark.parametrize(("n", "batch_size"), [(10, 3), (64, 64), (5, 8), (1000, 128)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_minibatches_cover_every_index_once(n: int, batch_size: int, shuffle: bool) -> None:
    batches = list(
        iterate_minibatches(
            n, batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(0)
        )
    )
    assert all(b.dtype == torch.int64 and b.ndim == 1 for b in batches)
    assert all(len(b) == batch_size for b in batches[:-1])
    assert len(batches) == -(-n // batch_size)
    allidx = torch.cat(batches)
    assert sorted(allidx.tolist()) == list(range(n))
    if not shuffle:
        assert allidx.tolist() == list(range(n))


def test_minibatches_shuffle_is_seeded() -> None:
    def order(seed: int) -> list[int]:
        gen = torch.Generator().manual_seed(seed)
        return torch.cat(list(iterate_minibatches(100, 7, generator=gen))).tolist()

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert order(0) != list(range(100))


def test_minibatches_drop_last() -> None:
    batches = list(iterate_minibatches(10, 3, drop_last=True))
    assert [len(b) for b in batches] == [3, 3, 3]


@pytest.mark.parametrize(("n", "batch_size", "flag"), [(0, 4, "n"), (10, 0, "batch_size")])
def test_minibatches_bad_sizes(n: int, batch_size: int, flag: str) -> None:
    with pytest.raises(PplGenError, match=flag):
        iterate_minibatches(n, batch_size)  # raises on the call, before iterating


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_minibatches_same_on_cuda() -> None:
    cpu = torch.cat(list(iterate_minibatches(50, 8, generator=torch.Generator().manual_seed(4))))
    gpu = list(
        iterate_minibatches(50, 8, generator=torch.Generator().manual_seed(4), device="cuda")
    )
    assert all(b.is_cuda for b in gpu)
    assert torch.equal(torch.cat(gpu).cpu(), cpu)


# --------------------------------------------------------------------------- MNIST


def test_mnist_shapes(mnist: DataSplits) -> None:
    assert mnist.name == "mnist"
    assert mnist.data_dim == 784 and mnist.image_shape == (28, 28)
    assert mnist.test.shape == (10_000, 784)
    assert mnist.train.shape[0] + mnist.val.shape[0] == 14_262
    assert mnist.val.shape[0] == 1426
    assert float(mnist.train.min()) == 0.0 and float(mnist.train.max()) == 1.0
    assert mnist.test_labels.shape == (10_000,) and mnist.test_labels.dtype == torch.int64
    assert set(mnist.train_labels.tolist()) == set(range(10))


def test_mnist_binarised_and_truncated(mnist: DataSplits) -> None:
    s = load_dataset("mnist", root=MNIST_ROOT, binarize="dynamic", n_train=500, n_test=200)
    assert s.train.shape == (500, 784) and s.test.shape == (200, 784)
    assert torch.equal(s.train, mnist.train[:500])  # train grey, same seeded split
    assert _is_binary(s.test) and _is_binary(s.val)
