"""pix2pix (Isola et al. 2017): U-Net and pair-PatchGAN shapes, a two-step training run, the
checkpoint round trip, the paired-translation metrics and the MNIST / MNIST-M pairs.  Tiny
networks on synthetic pairs (digits upsampled to 28x28, tinted to colour)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from ppl_gen.core.checkpoint import load_checkpoint
from ppl_gen.core.errors import PplGenError
from ppl_gen.data.images import ImageData, load_images
from ppl_gen.engine.rng import seed_everything
from ppl_gen.gan.pix2pix import PairDiscriminator, UNetGenerator
from ppl_gen.gan.pix2pix_trainer import (
    Pix2PixConfig,
    build_pix2pix,
    load_pix2pix,
    train_pix2pix,
)
from ppl_gen.metrics.translation import evaluate_translation

MNIST = Path("..") / "shared" / "data" / "mnist"
BSDS = Path("..") / "shared" / "data" / "bsds500" / "train"


def pairs(n: int = 32) -> tuple[ImageData, ImageData]:
    d = load_images("digits", n=n, seed=0)
    grey = F.interpolate(d.images, size=28)
    colour = torch.cat([grey, 1 - grey, 0.5 * grey], dim=1)
    return ImageData("grey", grey, d.labels, 10), ImageData("colour", colour, d.labels, 10)


@pytest.mark.parametrize(
    ("cin", "cout", "size", "n_down"), [(1, 3, 28, 3), (3, 1, 28, 3), (1, 1, 32, 3), (1, 3, 8, 3)]
)
def test_unet_shapes(cin, cout, size, n_down):
    g = UNetGenerator(cin, cout, size, ngf=4, n_down=n_down)
    y = g(torch.rand(2, cin, size, size) * 2 - 1)
    assert y.shape == (2, cout, size, size) and float(y.detach().abs().max()) <= 1.0


def test_unet_skip_connections_carry_the_input():
    # the outermost decoder layer sees the first encoder layer's output: a one-pixel change
    # of the input moves the output near that pixel even with the innermost level cut off
    g = UNetGenerator(1, 1, 28, ngf=4).eval()
    with torch.no_grad():
        g.net.inner.inner.up[1].weight.zero_()
        g.net.inner.inner.up[1].bias.zero_()
    x = torch.rand(1, 1, 28, 28, requires_grad=True)
    g(x)[0, 0, 3, 3].backward()
    assert x.grad.abs().sum() > 0


def test_unet_refuses_too_many_halvings():
    with pytest.raises(PplGenError, match="^n_down"):
        UNetGenerator(1, 1, 8, ngf=4, n_down=5)


def test_pair_discriminator_judges_the_pair():
    d = PairDiscriminator(1, 3, ndf=4, n_layers=2, image_size=28)
    out = d(torch.rand(2, 3, 28, 28), torch.rand(2, 1, 28, 28))
    assert out.shape == (2, 1, 5, 5)
    with pytest.raises(PplGenError):
        d(torch.rand(2, 3, 28, 28), torch.rand(2, 3, 28, 28))  # source with 3 channels


def test_two_step_training_and_checkpoint(tmp_path):
    src, tgt = pairs(32)
    config = Pix2PixConfig(
        ngf=4, ndf=4, batch_size=16, epochs=1, device="cpu", progress=False,
        out=str(tmp_path), ema=0.5, loss="hinge", r1=1.0, spectral_norm=True,
    )  # fmt: skip
    seed_everything(config.seed)  # the trainer's initial weights
    before = [
        p.detach().clone() for p in build_pix2pix(config, (1, 28, 28), (3, 28, 28))[0].parameters()
    ]
    result = train_pix2pix(src, tgt, config)
    assert result.iterations == 2
    for key in ("d_loss", "g_loss", "gan_loss", "l1_loss"):
        assert torch.isfinite(torch.tensor(result.history[key])).all()
    moved = [
        not torch.equal(a, p) for a, p in zip(before, result.generator.parameters(), strict=True)
    ]
    assert any(moved)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["kind"] == "pix2pix" and "generator_ema" in state
    g = load_pix2pix(state)
    x = src.images[:4] * 2 - 1
    assert torch.equal(g(x), result.ema(x))
    assert (tmp_path / "samples_epoch_001.png").is_file()


def test_unpaired_data_is_refused():
    src, tgt = pairs(32)
    short = ImageData("c", tgt.images[:16], None, None)
    with pytest.raises(PplGenError, match="^target"):
        train_pix2pix(src, short, Pix2PixConfig(ngf=4, ndf=4, batch_size=16, device="cpu"))


def test_translation_metrics():
    _, tgt = pairs(16)

    class Identity(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return x + self.w

    class Oracle(torch.nn.Module):  # "classifies" by the stored label of each image
        def __init__(self, labels):
            super().__init__()
            self.labels, self.p = labels, torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return F.one_hot(self.labels[: x.shape[0]], 10).float() + self.p

    r = evaluate_translation(Identity(), tgt.images, tgt.images, tgt.labels, Oracle(tgt.labels))
    assert r["l1"] == pytest.approx(0.0, abs=1e-6) and r["label_preservation"] == 1.0
    shifted = evaluate_translation(Identity(), tgt.images, (tgt.images + 0.25).clamp(max=2))
    assert shifted["l1"] == pytest.approx(0.25, abs=1e-5)


@pytest.mark.skipif(
    not ((MNIST / "MNIST" / "raw").is_dir() and BSDS.is_dir()),
    reason="needs MNIST and BSDS500 in ../shared/data",
)
def test_mnist_and_mnistm_pairs_share_their_digits():
    from ppl_gen.jobs.train_pix2pix import PairSource

    source, target, labels = PairSource("mnist-to-mnistm", str(MNIST), str(BSDS), 20, 20).load(
        "test"
    )
    assert source.images.shape == (20, 1, 28, 28) and target.images.shape == (20, 3, 28, 28)
    assert torch.equal(labels, source.labels) and torch.equal(labels, target.labels)

    # MNIST-M = |crop - digit| with a crop in [0, 1]: crop = digit +- target, so every pixel
    # of a true pair has digit + target <= 1 or digit - target >= 0; a shuffled pair breaks it
    def violations(d, t):
        return float(((d + t > 1 + 2 / 255) & (d - t < -2 / 255)).float().mean())

    assert violations(source.images, target.images) == 0.0
    assert violations(source.images.roll(1, 0), target.images) > 0.001
