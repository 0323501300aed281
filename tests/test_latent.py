"""Latent-space tools: interpolation (lerp, slerp), corner grids, attribute vectors, the
manifold, t-SNE, the encoder/decoder pair registry and the tool runs' outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ppl_gen
from ppl_gen.autoencoders import MLPAutoencoder, train_autoencoder, variant_config
from ppl_gen.core.errors import PplGenError
from ppl_gen.jobs import latent as jobs
from ppl_gen.latent import (
    EncoderDecoder,
    apply_attribute,
    attribute_mask,
    attribute_vector,
    corner_grid,
    lerp,
    load_pair,
    manifold,
    manifold_latents,
    register_pair_loader,
    slerp,
    tsne,
)
from ppl_gen.latent.pairs import PAIR_LOADERS
from ppl_gen.viz.report import latent_manifold_grid

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


# --------------------------------------------------------------------------- interpolation


def test_lerp_endpoints_and_midpoint():
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([-1.0, 0.0, 5.0])
    path = lerp(a, b, 5)
    assert path.shape == (5, 3)
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)
    torch.testing.assert_close(path[2], (a + b) / 2)


def test_slerp_stays_on_the_unit_sphere_and_reproduces_endpoints():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(6, 16, generator=gen, dtype=torch.float64)
    b = torch.randn(6, 16, generator=gen, dtype=torch.float64)
    a, b = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    path = slerp(a, b, 11)
    assert path.shape == (11, 6, 16)
    torch.testing.assert_close(path.norm(dim=-1), torch.ones(11, 6, dtype=torch.float64))
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)
    # constant angular speed: consecutive points are equally far apart along the arc
    cos = (path[1:] * path[:-1]).sum(-1).clamp(-1, 1)
    steps = torch.arccos(cos)
    torch.testing.assert_close(steps, steps[:1].expand_as(steps), atol=1e-9, rtol=0)


def test_slerp_of_orthogonal_unit_vectors_and_of_parallel_ones():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mid = slerp(e1, e2, 3)[1]
    torch.testing.assert_close(mid, torch.tensor([1.0, 1.0]) / math.sqrt(2))
    # parallel endpoints fall back to lerp (no division by sin(0))
    path = slerp(e1, 2 * e1, 3)
    assert bool(torch.isfinite(path).all())
    torch.testing.assert_close(path[1], torch.tensor([1.5, 0.0]))


def test_interpolation_between_different_shapes_is_refused():
    with pytest.raises(PplGenError, match="same shape"):
        lerp(torch.zeros(3), torch.zeros(4), 5)
    with pytest.raises(PplGenError, match="same shape"):
        slerp(torch.zeros(2, 3), torch.zeros(3), 5)
    with pytest.raises(PplGenError, match="^steps"):
        slerp(torch.ones(3), torch.ones(3), 1)


@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_corner_grid_reproduces_the_corners(method):
    corners = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    grid = corner_grid(corners, 4, method).reshape(4, 4, 5)
    for (r, c), k in zip([(0, 0), (0, 3), (3, 0), (3, 3)], range(4), strict=True):
        torch.testing.assert_close(grid[r, c], corners[k])
    if method == "lerp":
        odd = corner_grid(corners, 3, "lerp").reshape(3, 3, 5)
        torch.testing.assert_close(odd[1, 1], corners.mean(0))
    with pytest.raises(PplGenError, match="^corners"):
        corner_grid(corners[:3], 4)


# --------------------------------------------------------------------------- attributes


def test_attribute_vector_is_the_difference_of_means():
    z = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 0.0], [0.0, 4.0]])
    mask = torch.tensor([True, True, False, False])
    torch.testing.assert_close(attribute_vector(z, mask), torch.tensor([2.0, -1.0]))
    moved = apply_attribute(z[:1], torch.tensor([2.0, -1.0]), torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(moved[0], torch.tensor([[1.0, 0.0], [3.0, -1.0]]))
    with pytest.raises(PplGenError, match="no positive examples"):
        attribute_vector(z, torch.zeros(4, dtype=torch.bool), "class:9")
    with pytest.raises(PplGenError, match="no negative examples"):
        attribute_vector(z, torch.ones(4, dtype=torch.bool), "thick")


def test_attribute_masks():
    x = torch.tensor([[0.0, 0.1], [0.9, 0.9], [0.5, 0.5], [0.2, 0.0]])
    labels = torch.tensor([1, 2, 1, 3])
    assert attribute_mask("class:1", x, labels).tolist() == [True, False, True, False]
    assert attribute_mask("thick", x).tolist() == [False, True, True, False]
    assert attribute_mask("thin", x).tolist() == [True, False, False, True]
    with pytest.raises(PplGenError, match="^attribute"):
        attribute_mask("bold", x)


# --------------------------------------------------------------------------- manifold, t-SNE


def _pair(latent_dim: int, encode: bool = True) -> EncoderDecoder:
    torch.manual_seed(0)
    model = MLPAutoencoder(64, latent_dim, (8,))
    return EncoderDecoder(
        model.encode if encode else None, model.decode, latent_dim, (8, 8), kind="autoencoder"
    )


def test_manifold_matches_the_report_grid_and_needs_two_dimensions():
    pair = _pair(2)
    images, z = manifold(pair, 5)
    assert images.shape == (25, 64) and z.shape == (25, 2)
    torch.testing.assert_close(images, latent_manifold_grid(pair.decode_rows, 5))
    torch.testing.assert_close(z, manifold_latents(5))
    with pytest.raises(PplGenError, match="^latent_dim"):
        manifold(_pair(3), 5)


def test_tsne_shape_and_the_perplexity_limit():
    z = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
    emb = tsne(z, perplexity=5, max_iter=250)
    assert emb.shape == (40, 2) and np.isfinite(emb).all()
    with pytest.raises(PplGenError, match="^perplexity"):
        tsne(z[:10], perplexity=30)


# --------------------------------------------------------------------------- pairs


def test_pair_checks_latent_dimensions_and_missing_encoders():
    pair = _pair(3)
    with pytest.raises(PplGenError, match="^latent_dim"):
        pair.decode_rows(torch.zeros(2, 4))
    with pytest.raises(PplGenError, match="64 values"):
        pair.encode_rows(torch.zeros(2, 10))
    decoder_only = _pair(3, encode=False)
    assert decoder_only.decode_rows(torch.zeros(2, 3)).shape == (2, 64)
    with pytest.raises(PplGenError, match="no encoder"):
        decoder_only.encode_rows(torch.zeros(2, 64))


def test_registered_decoder_only_loader(tmp_path):
    from ppl_gen.core.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "g.pt", {"kind": "test-generator"})
    register_pair_loader("test-generator", lambda path, state, dev: _pair(2, encode=False))
    try:
        pair = load_pair(str(tmp_path / "g.pt"), "cpu")
        assert pair.encode is None
        jobs.run_manifold(pair, tmp_path / "out", n=3)
        assert (tmp_path / "out" / "manifold.png").is_file()
        x = torch.rand(5, 64)
        with pytest.raises(PplGenError, match="no encoder"):
            jobs.run_tsne(pair, tmp_path / "out", x, None, perplexity=2)
    finally:
        PAIR_LOADERS.pop("test-generator")
    with pytest.raises(PplGenError, match="kind 'test-generator'"):
        load_pair(str(tmp_path / "g.pt"), "cpu")


@pytest.fixture(scope="module")
def trained_ae(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ae")
    splits = ppl_gen.load_dataset("digits", seed=0)
    torch.manual_seed(0)
    model = MLPAutoencoder(64, 2, (16,), image_shape=(8, 8))
    config = variant_config(
        "ae", epochs=2, progress=False, device="cpu", checkpoint=str(folder / "ckpt.pt")
    )
    train_autoencoder(model, splits, config, spec={"data": {"name": "digits", "seed": 0}})
    return folder / "ckpt.pt", model


def test_load_pair_of_an_autoencoder_and_every_tool(trained_ae, tmp_path):
    ckpt, model = trained_ae
    pair = load_pair(str(ckpt), "cpu")
    assert pair.kind == "autoencoder" and pair.latent_dim == 2 and pair.image_shape == (8, 8)
    x, y, name = jobs.load_images(pair, n=60)
    assert name == "digits" and x.shape == (60, 64) and y.shape == (60,)
    torch.testing.assert_close(pair.encode_rows(x), model.encode(x).detach())
    out = tmp_path / "tools"
    s = jobs.run_interpolate(pair, out, x, y, index_a=0, index_b=5, steps=6, method="slerp")
    data = np.load(s["arrays"])
    assert data["z"].shape == (6, 2) and data["images"].shape == (6, 64)
    np.testing.assert_allclose(data["z"][0], pair.encode_rows(x[:1])[0].numpy(), rtol=1e-6)
    jobs.run_grid(pair, out, x, y, corners=(0, 1, 2, 3), n=4)
    jobs.run_manifold(pair, out, n=4)
    s = jobs.run_attribute(pair, out, x, y, attribute="class:3", n_images=3)
    assert s["positives"] == int((y == 3).sum())
    jobs.run_tsne(pair, out, x, y, perplexity=5)
    s = jobs.run_reconstruct(pair, out, x, y, n_images=4, noise="masking", noise_level=0.5)
    assert np.load(s["arrays"])["corrupted"].shape == (4, 64)
    for name in ("interpolate", "grid", "manifold", "attribute", "tsne", "reconstruct"):
        assert (out / f"{name}.png").is_file() and (out / f"{name}.npz").is_file()
    assert (out / "latent_scatter.png").is_file()
    assert [p.name for p in out.glob(".*")] == []


def test_tool_bad_inputs(trained_ae, tmp_path):
    pair = load_pair(str(trained_ae[0]), "cpu")
    x, y, _ = jobs.load_images(pair, n=20)
    with pytest.raises(PplGenError, match="same shape"):
        jobs.run_interpolate(pair, tmp_path, z_from=torch.zeros(2), z_to=torch.zeros(3))
    with pytest.raises(PplGenError, match="^latent_dim"):
        jobs.run_interpolate(pair, tmp_path, z_from=torch.zeros(5), z_to=torch.ones(5))
    with pytest.raises(PplGenError, match="no positive examples"):
        jobs.run_attribute(pair, tmp_path, x, y, attribute="class:42")
    with pytest.raises(PplGenError, match="^perplexity"):
        jobs.run_tsne(pair, tmp_path, x, y, perplexity=30)
    with pytest.raises(PplGenError, match="^index_b"):
        jobs.run_interpolate(pair, tmp_path, x, y, index_b=99)
    with pytest.raises(PplGenError, match="^data"):
        jobs.load_images(pair, "mnist", "/nonexistent")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tools_on_a_cuda_pair(trained_ae, tmp_path):
    pair = load_pair(str(trained_ae[0]), "cuda")
    x, y, _ = jobs.load_images(pair, n=40)
    jobs.run_interpolate(pair, tmp_path, x, y, steps=4)
    jobs.run_manifold(pair, tmp_path, n=3)
    jobs.run_reconstruct(pair, tmp_path, x, y, noise="gaussian")
    assert (tmp_path / "reconstruct.npz").is_file()
