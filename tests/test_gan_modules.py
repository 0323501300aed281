"""Shapes of the adversarial networks for grey and colour data, input checks, the
N(0, 0.02) initialisation and the image pool."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ppl_gen.core.errors import PplGenError
from ppl_gen.data.images import ImageData, load_images, with_channels
from ppl_gen.gan.cgan import ConditionalDiscriminator, ConditionalGenerator
from ppl_gen.gan.cyclegan import PatchDiscriminator, ResnetGenerator
from ppl_gen.gan.dcgan import DCDiscriminator, DCGenerator
from ppl_gen.gan.image_pool import ImagePool
from ppl_gen.gan.init import init_weights_normal
from ppl_gen.gan.mlp_gan import MLPDiscriminator, MLPGenerator
from ppl_gen.gan.trainer import GANConfig, build_gan


@pytest.mark.parametrize("channels", [1, 3])
def test_mlp_gan_shapes(channels):
    g = MLPGenerator(8, (channels, 8, 8), hidden=(16,))
    d = MLPDiscriminator((channels, 8, 8), hidden=(16,))
    x = g(torch.randn(5, 8))
    assert x.shape == (5, channels, 8, 8)
    assert x.abs().max() <= 1
    assert d(x).shape == (5,)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32])
def test_dcgan_shapes(channels, size):
    g = DCGenerator(10, (channels, size, size), ngf=4)
    d = DCDiscriminator((channels, size, size), ndf=4)
    x = g(torch.randn(3, 10))
    assert x.shape == (3, channels, size, size)
    assert d(x).shape == (3,)


@pytest.mark.parametrize(
    ("shape", "arch"), [((1, 28, 28), "dcgan"), ((3, 32, 32), "dcgan"), ((1, 8, 8), "mlp")]
)
def test_cgan_shapes(shape, arch):
    g = ConditionalGenerator(6, shape, 10, arch, width=4)
    d = ConditionalDiscriminator(shape, 10, arch, width=4)
    y = torch.tensor([0, 3, 9])
    x = g(torch.randn(3, 6), y)
    assert x.shape == (3, *shape)
    assert d(x, y).shape == (3,)


def test_cgan_label_changes_the_output():
    g = ConditionalGenerator(6, (1, 8, 8), 10, "mlp", width=8)
    z = torch.randn(1, 6)
    assert not torch.allclose(g(z, torch.tensor([1])), g(z, torch.tensor([2])))


@pytest.mark.parametrize(("cin", "cout"), [(1, 3), (3, 1), (3, 3)])
def test_cyclegan_shapes(cin, cout):
    g = ResnetGenerator(cin, cout, ngf=4, n_blocks=1, image_size=28)
    d = PatchDiscriminator(cout, ndf=4, n_layers=2, image_size=28)
    y = g(torch.rand(2, cin, 28, 28) * 2 - 1)
    assert y.shape == (2, cout, 28, 28)
    assert d(y).shape == (2, 1, 5, 5)


@pytest.mark.parametrize("n_down", [1, 2])
def test_cyclegan_downsamplings(n_down):
    g = ResnetGenerator(3, 3, ngf=4, n_blocks=1, image_size=28, n_down=n_down)
    assert g(torch.zeros(1, 3, 28, 28)).shape == (1, 3, 28, 28)
    block = next(m for m in g.modules() if m.__class__.__name__ == "ResnetBlock")
    assert block.block[1].in_channels == 4 * 2**n_down
    with pytest.raises(PplGenError, match="^n_down must be"):
        ResnetGenerator(3, 3, ngf=4, n_down=4)


def test_instance_norm_in_cyclegan_networks():
    g = ResnetGenerator(1, 1, ngf=4, n_blocks=1)
    assert any(isinstance(m, nn.InstanceNorm2d) for m in g.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in g.modules())


def test_mismatched_channels_are_refused():
    d = DCDiscriminator((3, 28, 28), ndf=4)
    with pytest.raises(PplGenError, match="channel"):
        d(torch.zeros(2, 1, 28, 28))
    g = ResnetGenerator(3, 1, ngf=4, n_blocks=1)
    with pytest.raises(PplGenError, match="channel"):
        g(torch.zeros(2, 1, 28, 28))
    with pytest.raises(PplGenError, match="channel"):
        MLPDiscriminator((1, 8, 8))(torch.zeros(2, 3, 8, 8))


def test_dcgan_refuses_other_sizes():
    with pytest.raises(PplGenError, match="28x28 or 32x32"):
        DCGenerator(10, (1, 8, 8))


def test_channels_come_from_the_data():
    colour = ImageData("c", torch.rand(4, 3, 28, 28), None, None)
    g, d = build_gan(GANConfig(model="dcgan", ngf=4, ndf=4, latent_dim=5), colour.image_shape)
    assert g(torch.randn(2, 5)).shape == (2, 3, 28, 28)
    grey = with_channels(colour, 1)
    g, d = build_gan(GANConfig(model="dcgan", ngf=4, ndf=4, latent_dim=5), grey.image_shape)
    assert g(torch.randn(2, 5)).shape == (2, 1, 28, 28)


def test_folder_data_grey_and_colour(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.new("L", (8, 8), color=i * 50).save(tmp_path / f"{i}.png")
    grey = load_images(str(tmp_path))
    assert grey.images.shape == (3, 1, 8, 8) and grey.labels is None
    Image.new("RGB", (8, 8), color=(255, 0, 0)).save(tmp_path / "red.png")
    colour = load_images(str(tmp_path))
    assert colour.images.shape == (4, 3, 8, 8)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PplGenError, match="no image files"):
        load_images(str(empty))


def test_normal_init():
    g = DCGenerator(100, (1, 32, 32), ngf=64)
    w = g.net[0].weight
    assert w.std().item() == pytest.approx(0.02, rel=0.05)
    assert w.mean().abs().item() < 0.002
    bn = g.net[1]
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=0.01)
    assert torch.all(bn.bias == 0)
    lin = init_weights_normal(nn.Linear(500, 500))
    assert lin.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert torch.all(lin.bias == 0)


def _img(v: float) -> torch.Tensor:
    return torch.full((1, 2, 2), v)


def test_image_pool_fills_then_swaps():
    pool = ImagePool(3, seed=0)
    first = torch.stack([_img(i) for i in range(3)])
    assert torch.equal(pool.query(first), first)  # filling: returned as is
    assert len(pool) == 3
    seen_old = seen_new = 0
    for step in range(20):
        new = torch.stack([_img(100 + 2 * step), _img(101 + 2 * step)])
        out = pool.query(new)
        assert out.shape == new.shape
        assert len(pool) == 3  # capacity is kept
        stored_values = {float(im[0, 0, 0]) for im in pool.images}
        for i, o in enumerate(out):
            if torch.equal(o, new[i]):
                seen_new += 1
            else:  # an older image came back; the new one took its place in the pool
                seen_old += 1
                assert float(o[0, 0, 0]) < float(new[i, 0, 0, 0])
                assert float(new[i, 0, 0, 0]) in stored_values or i == 0
    # with probability 1/2 each: both outcomes occur in 40 queries
    assert seen_old > 5 and seen_new > 5


def test_image_pool_detaches_and_size_zero_is_identity():
    x = torch.randn(2, 1, 2, 2, requires_grad=True)
    out = ImagePool(0).query(x * 2)
    assert not out.requires_grad
    assert torch.equal(out, (x * 2).detach())


def test_image_pool_state_round_trip():
    pool = ImagePool(4, seed=1)
    for _ in range(5):
        pool.query(torch.randn(3, 1, 2, 2))
    clone = ImagePool(4, seed=99)
    clone.load_state_dict(pool.state_dict())
    batch = torch.randn(3, 1, 2, 2)
    assert torch.equal(pool.query(batch), clone.query(batch))
    assert all(torch.equal(a, b) for a, b in zip(pool.images, clone.images, strict=True))


def test_image_pool_rejects_negative_size():
    with pytest.raises(PplGenError, match="^pool_size must be"):
        ImagePool(-1)


def test_image_pool_state_holds_tensors_only_even_when_empty():
    pool = ImagePool(2, seed=0)
    empty = pool.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in empty.values())
    clone = ImagePool(2, seed=5)
    clone.load_state_dict(empty)
    assert len(clone) == 0
    pool.query(torch.randn(3, 1, 2, 2))
    full = pool.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in full.values())
    assert full["images"].shape == (2, 1, 2, 2) and int(full["size"]) == 2
    clone.load_state_dict(full)
    assert len(clone) == 2 and clone.images[0].device.type == "cpu"
    clone.reset(seed=0)
    assert len(clone) == 0
