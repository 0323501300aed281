"""The MNIST-M builder (Ganin et al. JMLR 2016, sec. 5.2.1): determinism, value range,
caching and bad input, on synthetic digits and photographs (plus the real data if present)."""

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ppl_gen.core.errors import PplGenError
from ppl_gen.data.mnistm import MNISTM, blend_digits, load_mnistm

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _write_idx(path: Path, array: np.ndarray) -> None:
    code = 0x08  # unsigned byte
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _fake_mnist(root: Path, n_train: int = 40, n_test: int = 20) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, (n,)))
    return root


def _fake_photos(folder: Path, sizes=((40, 50), (64, 33), (30, 30))) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture
def sources(tmp_path):
    return _fake_mnist(tmp_path / "mnist"), _fake_photos(tmp_path / "photos")


def test_blend_is_abs_difference_of_a_crop_and_the_digit():
    photo = torch.arange(3 * 30 * 31, dtype=torch.int64).reshape(3, 30, 31) % 256
    photo = photo.to(torch.uint8)
    digits = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    out = blend_digits(digits, [photo], torch.Generator().manual_seed(0))
    assert out.shape == (5, 3, 28, 28) and out.dtype == torch.uint8
    for k in range(5):
        # find the crop that explains image k: exactly one top-left corner must match
        matches = [
            (t, left)
            for t in range(3)
            for left in range(4)
            if torch.equal(
                out[k],
                (photo[:, t : t + 28, left : left + 28].int() - digits[k].int())
                .abs()
                .to(torch.uint8),
            )
        ]
        assert len(matches) == 1


def test_builder_is_deterministic_in_range_and_labelled(sources, tmp_path):
    mnist, photos = sources
    x1, y1 = load_mnistm(mnist, photos, split="train", seed=3, cache_dir=tmp_path / "c1")
    x2, y2 = load_mnistm(mnist, photos, split="train", seed=3, cache_dir=tmp_path / "c2")
    assert x1.shape == (40, 3, 28, 28) and x1.dtype == torch.float32
    assert y1.shape == (40,) and y1.dtype == torch.int64
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert float(x1.min()) >= 0.0 and float(x1.max()) <= 1.0
    x3, _ = load_mnistm(mnist, photos, split="train", seed=4, cache_dir=tmp_path / "c1")
    assert not torch.equal(x1, x3)  # the seed matters
    xt, yt = load_mnistm(mnist, photos, split="test", seed=3, cache_dir=tmp_path / "c1")
    assert xt.shape == (20, 3, 28, 28) and yt.shape == (20,)


def test_cache_is_reused_and_keyed_by_the_photos(sources, tmp_path):
    mnist, photos = sources
    cache = tmp_path / "cache"
    x1, _ = load_mnistm(mnist, photos, seed=0, cache_dir=cache)
    files = list(cache.glob("*.pt"))
    assert len(files) == 1
    # a tampered cache entry is what comes back: proof the cache is read, not rebuilt
    entry = torch.load(files[0], weights_only=True)
    entry["x"][0].zero_()
    torch.save(entry, files[0])
    x2, _ = load_mnistm(mnist, photos, seed=0, cache_dir=cache)
    assert float(x2[0].sum()) == 0.0 and torch.equal(x2[1:], x1[1:])
    Image.fromarray(np.full((40, 40, 3), 7, dtype=np.uint8)).save(photos / "9.png")
    load_mnistm(mnist, photos, seed=0, cache_dir=cache)
    assert len(list(cache.glob("*.pt"))) == 2  # new photo set, new entry


class _Trap:
    """A pickled object whose loading would call a function (what weights_only refuses)."""

    def __reduce__(self):
        return (_sprung.append, ("ran",))


_sprung: list = []


def test_cache_entry_holding_code_is_refused_and_rebuilt_atomically(sources, tmp_path):
    mnist, photos = sources
    cache = tmp_path / "cache"
    x1, y1 = load_mnistm(mnist, photos, seed=0, cache_dir=cache)
    (entry,) = cache.glob("*.pt")
    torch.save({"x": _Trap(), "y": y1}, entry)  # a crafted cache file
    x2, y2 = load_mnistm(mnist, photos, seed=0, cache_dir=cache)
    assert _sprung == []  # never unpickled with code execution
    assert torch.equal(x1, x2) and torch.equal(y1, y2)  # rebuilt from the sources
    # the rebuilt entry is a plain, weights-only file, and no temporary file is left over
    assert torch.equal(torch.load(entry, weights_only=True)["y"], y1)
    assert sorted(p.name for p in cache.iterdir()) == [entry.name]


def test_dataset_returns_image_label_pairs_with_transform(sources, tmp_path):
    mnist, photos = sources
    ds = MNISTM(mnist, photos, train=False, cache_dir=tmp_path, transform=lambda x: x * 2)
    image, label = ds[3]
    assert len(ds) == 20 and image.shape == (3, 28, 28) and isinstance(label, int)
    assert torch.equal(image, ds.data[3] * 2)


def test_missing_photo_folder_is_a_clear_error(sources, tmp_path):
    mnist, _ = sources
    with pytest.raises(PplGenError, match="^bsds_root"):
        load_mnistm(mnist, tmp_path / "nope", cache_dir=tmp_path)


def test_empty_photo_folder_is_a_clear_error(sources, tmp_path):
    mnist, _ = sources
    (tmp_path / "empty").mkdir()
    with pytest.raises(PplGenError, match="^bsds_root .*no photographs"):
        load_mnistm(mnist, tmp_path / "empty", cache_dir=tmp_path)


def test_photo_smaller_than_the_crop_is_a_clear_error(sources, tmp_path):
    mnist, _ = sources
    photos = _fake_photos(tmp_path / "small", sizes=((40, 40), (27, 60)))
    with pytest.raises(PplGenError, match="smaller than the 28x28 crop"):
        load_mnistm(mnist, photos, cache_dir=tmp_path)


def test_bad_split_and_missing_mnist_are_clear_errors(sources, tmp_path):
    mnist, photos = sources
    with pytest.raises(PplGenError, match="^split"):
        load_mnistm(mnist, photos, split="val", cache_dir=tmp_path)
    with pytest.raises(PplGenError, match="mnist_root|data_root"):
        load_mnistm(tmp_path / "no_mnist", photos, cache_dir=tmp_path)


@pytest.mark.skipif(
    not (SHARED_DATA / "bsds500" / "train").is_dir() or not (SHARED_DATA / "mnist").is_dir(),
    reason="needs MNIST and BSDS500 in ../shared/data",
)
def test_real_mnistm_test_split(tmp_path):
    x, y = load_mnistm(
        SHARED_DATA / "mnist", SHARED_DATA / "bsds500" / "train", split="test", cache_dir=tmp_path
    )
    assert x.shape == (10000, 3, 28, 28) and y.shape == (10000,)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # colourful: the three channels differ (unlike the greyscale digits)
    assert float((x[:, 0] - x[:, 2]).abs().mean()) > 0.02
