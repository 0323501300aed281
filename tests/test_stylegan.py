"""The style-based generator (Karras et al. 2019): mapping, learned constant, AdaIN styles,
noise inputs, style mixing, the mixing figure, ``ppl-gen train stylegan`` and exact resume.
Tiny networks on digits upsampled to 28x28."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from ppl_gen.core.checkpoint import load_checkpoint
from ppl_gen.core.errors import PplGenError
from ppl_gen.data.images import ImageData, load_images
from ppl_gen.gan.equalized import EqualizedConv2d, EqualizedLinear
from ppl_gen.gan.steps import make_optimizers
from ppl_gen.gan.stylegan import MappingNetwork, NoiseInput, StyleGenerator, style_mixing_grid
from ppl_gen.gan.trainer import GANConfig, load_generator, train_gan

pytestmark = pytest.mark.filterwarnings("ignore::ppl_gen.gan.monitor.GANTrainingWarning")


def digits28(n: int = 64) -> ImageData:
    d = load_images("digits", n=n, seed=0)
    return ImageData("digits28", F.interpolate(d.images, size=28), d.labels, 10)


def tiny(**kw) -> GANConfig:
    base = dict(
        model="stylegan", latent_dim=8, ngf=4, ndf=4, batch_size=32, epochs=2,
        device="cpu", progress=False, mapping_layers=2,
    )  # fmt: skip
    return GANConfig(**{**base, **kw})


def test_shapes_of_mapping_synthesis_and_layers():
    z = torch.randn(5, 8)
    assert MappingNetwork(8, 3)(z).shape == (5, 8)
    g = StyleGenerator(8, (1, 28, 28), ngf=4, mapping_layers=2)
    assert g.num_layers == 6 and g.const.shape == (1, 16, 7, 7)
    assert g(z).shape == (5, 1, 28, 28)
    assert g.styles(z).shape == (5, 6, 8)
    g32 = StyleGenerator(8, (3, 32, 32), ngf=4)
    assert g32.num_layers == 8 and g32(z).shape == (5, 3, 32, 32)
    assert float(g(z).detach().abs().max()) <= 1.0


def test_noise_inputs_scale_and_modes():
    layer = NoiseInput(3, 4)
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(layer(x), x)  # learned scales start at zero
    with torch.no_grad():
        layer.scale.copy_(torch.tensor([1.0, 2.0, 0.0]).view(1, 3, 1, 1))
    a, b = layer(x, "random"), layer(x, "random")
    assert not torch.equal(a, b)  # fresh maps
    assert torch.equal(layer(x, "const"), layer(x, "const"))
    n = layer(x, "const") - x  # one map per image, scaled per channel
    assert torch.allclose(n[:, 1], 2 * n[:, 0]) and torch.equal(n[:, 2], torch.zeros_like(n[:, 2]))
    assert torch.equal(layer(x, "none"), x)


def test_eval_forward_is_a_function_of_z_and_draws_no_global_random_numbers():
    g = StyleGenerator(8, (1, 28, 28), ngf=4).eval()
    for layer in g.layers:  # make the noise matter
        torch.nn.init.ones_(layer.noise.scale)
    z = torch.randn(3, 8)
    state = torch.get_rng_state()
    a, b = g(z), g(z)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    g.train()
    assert not torch.equal(g(z, noise_mode="random"), a)


def test_style_mixing_takes_coarse_styles_from_one_code_and_fine_from_the_other():
    g = StyleGenerator(8, (1, 28, 28), ngf=4, mixing_prob=0.0).eval()
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    ws = g.styles(z1, mix_z=z2, crossover=2)
    w1, w2 = g.mapping(z1), g.mapping(z2)
    assert torch.allclose(ws[:, :2], w1[:, None].expand(-1, 2, -1))
    assert torch.allclose(ws[:, 2:], w2[:, None].expand(-1, 4, -1))
    assert torch.allclose(g(z1, mix_z=z2, crossover=g.num_layers), g(z1))
    assert torch.allclose(g(z1, mix_z=z2, crossover=0), g(z2))
    assert not torch.allclose(g(z1, mix_z=z2, crossover=2), g(z1))


def test_mixing_regularisation_draws_only_while_training():
    g = StyleGenerator(8, (1, 28, 28), ngf=4, mixing_prob=1.0)
    z = torch.randn(4, 8)
    g.train()
    torch.manual_seed(1)
    mixed = g(z, noise_mode="none")
    g.mixing_prob = 0.0
    torch.manual_seed(1)
    plain = g(z, noise_mode="none")
    assert not torch.allclose(mixed, plain)
    g.mixing_prob = 1.0
    g.eval()
    assert torch.allclose(g(z, noise_mode="none"), plain)


def test_style_mixing_grid_layout():
    g = StyleGenerator(8, (1, 28, 28), ngf=4).eval()
    zc, zf = torch.randn(2, 8), torch.randn(3, 8)
    grid = style_mixing_grid(g, zc, zf)
    assert grid.shape == (12, 1, 28, 28)  # (2 + 1) rows of (3 + 1)
    assert torch.equal(grid[0], torch.ones(1, 28, 28))  # blank corner
    assert torch.allclose(grid[1:4], (g(zf) + 1) / 2, atol=1e-5)  # first row: the fine codes
    first_column = (g(zc[:1])[0] + 1) / 2  # the coarse codes
    assert torch.allclose(grid[4], first_column, atol=1e-5)
    mix = (g(zc[1:2], mix_z=zf[2:3], crossover=2)[0] + 1) / 2
    assert torch.allclose(grid[11], mix, atol=1e-5)


def test_stylegan_resume_with_stabilisers_equals_uninterrupted_training(tmp_path):
    data = digits28(32)
    kw = dict(loss="hinge", spectral_norm=True, r1=1.0, ema=0.9, epochs=2, batch_size=16)
    full = train_gan(data, tiny(out=str(tmp_path / "a"), **kw))
    config = tiny(out=str(tmp_path / "b"), **kw)
    assert train_gan(data, config, stop_after=1).epochs == 1
    resumed = train_gan(data, config, resume=True)
    for a, b in ((full.generator, resumed.generator), (full.ema, resumed.ema)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert full.history["d_loss"] == resumed.history["d_loss"]
    state = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert state["kind"] == "stylegan" and "generator_ema" in state
    g = load_generator(state)
    z = torch.randn(3, 8)
    assert torch.equal(g(z), resumed.ema(z))


def test_cli_train_stylegan_writes_the_mixing_figure(tmp_path, capsys):
    from PIL import Image

    from ppl_gen.cli import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(digits28(32).images):
        Image.fromarray((img[0] * 255).byte().numpy(), "L").save(folder / f"{i:02d}.png")
    out = tmp_path / "run"
    argv = ["train", "stylegan", "--data", folder, "--epochs", "1", "--latent-dim", "8",
            "--ngf", "4", "--ndf", "4", "--batch-size", "16", "--mapping-layers", "2",
            "--ema", "0.5", "--device", "cpu", "--out", out]  # fmt: skip
    assert main([str(a) for a in argv]) == 0
    assert "style_mixing.png" in capsys.readouterr().out
    with Image.open(out / "style_mixing.png") as im:
        assert im.size == (7 * 30 + 2, 7 * 30 + 2)  # 7 x 7 cells of 28 px, padding 2
    assert (out / "checkpoint.pt").is_file() and (out / "metrics.json").is_file()


@pytest.mark.parametrize("lr_mul", [1.0, 0.01])
def test_equalised_linear_keeps_he_scale_and_slows_adam_by_lr_mul(lr_mul):
    torch.manual_seed(0)
    layer = EqualizedLinear(400, 300, gain=2**0.5, lr_mul=lr_mul).double()
    w = (layer.weight * layer.scale).detach()
    assert abs(float(w.std()) - (2 / 400) ** 0.5) < 0.002  # He scale whatever lr_mul
    before = w.clone()
    opt = torch.optim.Adam(layer.parameters(), lr=1e-3)
    layer(torch.randn(16, 400, dtype=torch.float64)).square().mean().backward()
    opt.step()
    step = (layer.weight * layer.scale).detach() - before
    # Adam moves each stored weight by ~lr at first: the effective weight by lr c lr_mul
    expected = 1e-3 * (2 / 400) ** 0.5 * lr_mul
    assert float(step.abs().max()) == pytest.approx(expected, rel=0.01)


def test_equalised_conv_and_refusals():
    conv = EqualizedConv2d(8, 4, 3, gain=2**0.5)
    assert conv(torch.randn(2, 8, 7, 7)).shape == (2, 4, 7, 7)
    with pytest.raises(PplGenError, match="kernel must be odd"):
        EqualizedConv2d(8, 4, 2)
    with pytest.raises(PplGenError, match="lr_mul must be positive"):
        EqualizedLinear(8, 4, lr_mul=0.0)


def test_styles_move_the_image_from_the_start():
    # He-scaled style affines: different codes give clearly different images at
    # initialisation (with N(0, 0.02) affines all codes gave nearly one image)
    torch.manual_seed(0)
    g = StyleGenerator(16, (1, 28, 28), ngf=8).eval()
    x = g(torch.randn(64, 16))
    assert float(x.std(dim=0).mean()) > 0.1


def test_g_lr_sets_the_generator_optimiser_only():
    task_config = tiny(lr=2e-4, g_lr=2e-3)
    g, d = StyleGenerator(8, (1, 28, 28), ngf=4), torch.nn.Linear(2, 1)
    opt_g, opt_d = make_optimizers(g, d, task_config)
    assert opt_g.param_groups[0]["lr"] == 2e-3 and opt_d.param_groups[0]["lr"] == 2e-4
    opt_g, _ = make_optimizers(g, d, tiny(lr=2e-4))
    assert opt_g.param_groups[0]["lr"] == 2e-4
    with pytest.raises(PplGenError, match="g_lr must be positive"):
        tiny(g_lr=-1.0).validate()
