"""The stabilisers of every adversarial trainer: hinge loss values, the R1 penalty against a
hand-computed gradient norm, spectral normalisation (largest singular value ~ 1), the EMA
update rule and that samples / checkpoints use the EMA weights, and bad flag values on the
command line.  Tiny networks on digits."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from ppl_gen.cli import main
from ppl_gen.core.checkpoint import load_checkpoint
from ppl_gen.core.errors import PplGenError
from ppl_gen.data.images import ImageData, load_images, to_unit
from ppl_gen.gan.cycle_trainer import CycleGANConfig, load_cyclegan, train_cyclegan
from ppl_gen.gan.dcgan import DCDiscriminator
from ppl_gen.gan.losses import GANLoss, r1_penalty
from ppl_gen.gan.stabilisers import (
    GeneratorEMA,
    apply_spectral_norm,
    ema_weights,
    warmed_up_decay,
)
from ppl_gen.gan.steps import discriminator_step, fixed_inputs
from ppl_gen.gan.trainer import GANConfig, load_generator, train_gan

pytestmark = pytest.mark.filterwarnings("ignore::ppl_gen.gan.monitor.GANTrainingWarning")


def digits(n: int = 32, size: int = 8) -> ImageData:
    d = load_images("digits", n=n, seed=0)
    x = d.images if size == 8 else F.interpolate(d.images, size=size)
    return ImageData("digits", x, d.labels, 10)


def test_hinge_loss_values():
    loss = GANLoss("hinge")
    p = torch.tensor([2.0, 0.5, -1.0])
    assert float(loss(p, True)) == pytest.approx((0 + 0.5 + 2.0) / 3)  # relu(1 - D)
    assert float(loss(p, False)) == pytest.approx((3.0 + 1.5 + 0) / 3)  # relu(1 + D)
    assert float(loss(p, True, generator=True)) == pytest.approx(-0.5)  # -E[D(G(z))]
    assert float(GANLoss("vanilla")(p, True, generator=True)) == float(GANLoss("vanilla")(p, True))


def test_r1_penalty_equals_the_hand_computed_gradient_norm():
    torch.manual_seed(0)
    w, v = torch.randn(5, 3), torch.randn(5)

    def critic(x):  # D(x) = v . tanh(W x)
        return torch.tanh(x @ w.T) @ v

    x = torch.randn(4, 3)
    grad = (v * (1 - torch.tanh(x @ w.T) ** 2)) @ w  # dD/dx per row, by hand
    expected = grad.pow(2).sum(1).mean()
    assert r1_penalty(critic, x).item() == pytest.approx(float(expected), rel=1e-5)


def test_discriminator_step_adds_gamma_over_two_times_r1():
    torch.manual_seed(0)
    real, fake = torch.rand(4, 1, 28, 28) * 2 - 1, torch.rand(4, 1, 28, 28) * 2 - 1
    d = DCDiscriminator((1, 28, 28), 4, batch_norm=False)
    state = {k: v.clone() for k, v in d.state_dict().items()}
    expected = r1_penalty(d, real).item()
    losses = []
    for gamma in (0.0, 1000.0):
        d.load_state_dict(state)
        opt = torch.optim.SGD(d.parameters(), lr=0.0)
        losses.append(
            float(discriminator_step(d, opt, GANLoss("hinge"), real, fake, r1_gamma=gamma))
        )
    assert losses[1] - losses[0] == pytest.approx(500.0 * expected, rel=1e-3)


def test_spectral_norm_bounds_every_layer():
    d = apply_spectral_norm(DCDiscriminator((1, 28, 28), 4, batch_norm=False))
    layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(parametrize.is_parametrized(m, "weight") for m in layers)
    with torch.no_grad():
        for _ in range(30):  # power iterations run in training forwards
            d(torch.randn(2, 1, 28, 28))
    d.eval()
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert float(sigma) == pytest.approx(1.0, abs=0.02)


def test_ema_update_rule():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = GeneratorEMA(net, 0.9)
    p0 = {k: v.clone() for k, v in net.state_dict().items()}
    ema.update(net)  # the first update copies
    assert all(torch.equal(ema.module.state_dict()[k], p0[k]) for k in p0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net(torch.randn(4, 2))  # moves the batch-norm statistics
    p1 = {k: v.clone() for k, v in net.state_dict().items()}
    ema.update(net)
    d = 2 / 11  # warm-up: min(0.9, (1 + 1) / (10 + 1)) at the second update
    for k in ("0.weight", "0.bias", "1.weight", "1.running_mean"):
        assert torch.allclose(ema.module.state_dict()[k], d * p0[k] + (1 - d) * p1[k])
    for _ in range(2, 200):  # later updates reach the decay beta
        ema.update(net)
    assert warmed_up_decay(0.9, 150) == 0.9
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    p2 = {k: v.clone() for k, v in net.state_dict().items()}
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    ema.update(net)
    assert torch.allclose(
        ema.module.state_dict()["0.weight"], 0.9 * before["0.weight"] + 0.1 * p2["0.weight"]
    )
    restored = GeneratorEMA(net, 0.9)
    restored.load_state_dict(ema.state_dict())
    assert all(torch.equal(v, ema_weights(ema.state_dict())[k]) for k, v in
               restored.module.state_dict().items())  # fmt: skip


def test_samples_and_checkpoint_use_the_ema_generator(tmp_path, monkeypatch):
    import ppl_gen.gan.trainer as trainer

    grids = []
    monkeypatch.setattr(trainer, "save_sample_grid", lambda x, path, nrow, **kw: grids.append(x))
    monkeypatch.setattr(trainer, "plot_gan_losses", lambda h, path: None)
    config = GANConfig(model="gan", latent_dim=4, hidden=(16, 32), batch_size=16, epochs=1,
                       device="cpu", progress=False, ema=0.5, out=str(tmp_path))  # fmt: skip
    result = train_gan(digits(32), config)
    z, _, _ = fixed_inputs(config, torch.device("cpu"), None)
    with torch.no_grad():
        assert torch.equal(grids[-1], to_unit(result.ema(z)))
        assert not torch.equal(grids[-1], to_unit(result.generator.eval()(z)))
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    zz = torch.randn(3, 4)
    with torch.no_grad():
        assert torch.equal(load_generator(state)(zz), result.ema(zz))
        assert torch.equal(load_generator(state, ema=False)(zz), result.generator(zz))
    assert result.sampler is result.ema


@pytest.mark.parametrize("model", ["gan", "dcgan", "cgan", "stylegan"])
def test_every_gan_trainer_runs_with_all_stabilisers(model):
    size = 8 if model == "gan" else 28
    config = GANConfig(model=model, latent_dim=4, hidden=(8, 16), ngf=2, ndf=2, batch_size=16,
                       epochs=1, device="cpu", progress=False, loss="hinge",
                       spectral_norm=True, r1=1.0, ema=0.9, mapping_layers=1)  # fmt: skip
    result = train_gan(digits(32, size), config)
    assert all(torch.isfinite(torch.tensor(result.history[k])).all() for k in ("d_loss", "g_loss"))
    layers = [m for m in result.discriminator.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert all(parametrize.is_parametrized(m, "weight") for m in layers)
    assert result.ema is not None


def test_cyclegan_with_stabilisers_keeps_ema_generators(tmp_path):
    a = digits(16, 28)
    b = ImageData("inverted", 1 - a.images, None, None)
    config = CycleGANConfig(ngf=2, ndf=2, n_blocks=1, batch_size=8, epochs=1, decay_epochs=0,
                            device="cpu", progress=False, loss="hinge", spectral_norm=True,
                            r1=1.0, ema=0.9, out=str(tmp_path))  # fmt: skip
    result = train_cyclegan(a, b, config)
    assert set(result.emas) == {"G_AB", "G_BA"}
    nets = load_cyclegan(load_checkpoint(tmp_path / "checkpoint.pt"))
    x = a.images[:2] * 2 - 1
    with torch.no_grad():
        assert torch.equal(nets["G_AB"](x), result.emas["G_AB"](x))
    assert parametrize.is_parametrized(result.nets["D_A"].net[0], "weight")


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["train", "dcgan", "--r1", "-1"], "--r1"),
        (["train", "gan", "--ema", "1"], "--ema"),
        (["train", "cgan", "--loss", "hinge2"], "--loss"),
        (["train", "stylegan", "--loss", "softplus"], "--loss"),
        (["train", "stylegan", "--style-mixing", "1.5"], "--style-mixing"),
        (["train", "stylegan", "--mapping-layers", "0"], "--mapping-layers"),
        (["train", "cyclegan", "--ema", "-0.5"], "--ema"),
        (["train", "pix2pix", "--direction", "mnist-to-svhn"], "--direction"),
        (["train", "pix2pix", "--r1", "nan"], "--r1"),
        (["train", "pix2pix", "--lambda-l1", "-1"], "--lambda-l1"),
    ],
)
def test_bad_flag_values_exit_2_naming_the_flag(capsys, tmp_path, argv, flag):
    out = tmp_path / "run"
    code = main([*argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0], err
    assert not out.exists()  # nothing written


def test_validation_names_the_parameter():
    with pytest.raises(PplGenError, match="^spectral_norm"):
        GANConfig(spectral_norm="yes").validate()
    with pytest.raises(PplGenError, match="^r1"):
        CycleGANConfig(r1=float("inf")).validate()
