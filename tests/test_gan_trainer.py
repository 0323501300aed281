"""The GAN and CycleGAN trainers: D frozen during the G step, fakes detached for D, exact
resume, collapse warnings and outputs.  Tiny networks on tiny data."""

from __future__ import annotations

import warnings

import pytest
import torch

from ppl_gen.core.checkpoint import load_checkpoint
from ppl_gen.core.errors import PplGenError
from ppl_gen.data.images import ImageData, load_images
from ppl_gen.gan.cycle_trainer import (
    CycleGANConfig,
    build_cyclegan,
    cycle_generator_step,
    train_cyclegan,
)
from ppl_gen.gan.losses import GANLoss
from ppl_gen.gan.monitor import CollapseMonitor, GANTrainingWarning
from ppl_gen.gan.trainer import (
    GANConfig,
    build_gan,
    discriminator_step,
    generator_step,
    load_generator,
    make_optimizers,
    train_gan,
)

pytestmark = pytest.mark.filterwarnings("ignore::ppl_gen.gan.monitor.GANTrainingWarning")


def digits(n: int = 256) -> ImageData:
    return load_images("digits", n=n, seed=0)


def tiny(model: str = "gan", **kw) -> GANConfig:
    base = dict(
        model=model,
        latent_dim=4,
        hidden=(16, 32),
        ngf=4,
        ndf=4,
        batch_size=32,
        epochs=2,
        device="cpu",
        progress=False,
    )
    base.update(kw)
    return GANConfig(**base)


def params(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize("model", ["gan", "dcgan", "cgan"])
def test_discriminator_is_frozen_during_the_generator_step(model):
    shape = (1, 28, 28) if model == "dcgan" else (1, 8, 8)
    g, d = build_gan(tiny(model), shape, num_classes=10)
    opt_g, _ = make_optimizers(g, d, tiny(model))
    cond = (torch.randint(10, (6,)),) if model == "cgan" else ()
    before_d, before_g = params(d), params(g)
    fake = g(torch.randn(6, 4), *cond)
    generator_step(d, opt_g, GANLoss("vanilla"), fake, cond)
    assert all(p.grad is None for p in d.parameters())  # no gradient reached D
    assert all(p.requires_grad for p in d.parameters())  # unfrozen afterwards
    for a, p in zip(before_d, d.parameters(), strict=True):
        assert torch.equal(a, p)
    assert any(not torch.equal(a, p) for a, p in zip(before_g, g.parameters(), strict=True))


def test_fakes_are_detached_for_the_discriminator():
    config = tiny("gan")
    g, d = build_gan(config, (1, 8, 8))
    _, opt_d = make_optimizers(g, d, config)
    before_g = params(g)
    real = torch.rand(6, 1, 8, 8) * 2 - 1
    loss = discriminator_step(d, opt_d, GANLoss("vanilla"), real, g(torch.randn(6, 4)))
    assert torch.isfinite(loss)
    assert all(p.grad is None for p in g.parameters())
    for a, p in zip(before_g, g.parameters(), strict=True):
        assert torch.equal(a, p)
    assert all(p.grad is not None for p in d.parameters())


def test_wgan_gp_step_runs_with_penalty():
    config = tiny("gan", loss="wgan-gp")
    g, d = build_gan(config, (1, 8, 8))
    _, opt_d = make_optimizers(g, d, config)
    real = torch.rand(6, 1, 8, 8) * 2 - 1
    loss = discriminator_step(d, opt_d, GANLoss("wgan-gp"), real, g(torch.randn(6, 4)), (), 10.0)
    assert torch.isfinite(loss)


def _states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize(
    ("model", "loss"), [("gan", "vanilla"), ("cgan", "lsgan"), ("gan", "wgan-gp")]
)
def test_resume_equals_uninterrupted_training(tmp_path, model, loss):
    data = digits(192)
    config = tiny(model, loss=loss, epochs=3, decay_epochs=2)
    full = train_gan(
        data, tiny(model, loss=loss, epochs=3, decay_epochs=2, out=str(tmp_path / "a"))
    )
    config = tiny(model, loss=loss, epochs=3, decay_epochs=2, out=str(tmp_path / "b"))
    first = train_gan(data, config, stop_after=1)
    assert first.epochs == 1
    resumed = train_gan(data, config, resume=True)
    assert resumed.epochs == 3
    _states_equal(full.generator.state_dict(), resumed.generator.state_dict())
    _states_equal(full.discriminator.state_dict(), resumed.discriminator.state_dict())
    assert full.history["d_loss"] == resumed.history["d_loss"]
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert a["opt_g"]["state"][0]["exp_avg"].equal(b["opt_g"]["state"][0]["exp_avg"])
    assert a["sched_d"] == b["sched_d"]


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    r = train_gan(digits(64), tiny("gan", epochs=1, out=str(tmp_path)), resume=True)
    assert r.epochs == 1


def test_outputs_and_generator_reload(tmp_path):
    result = train_gan(digits(64), tiny("cgan", epochs=2, out=str(tmp_path)))
    for name in (
        "checkpoint.pt",
        "samples_epoch_001.png",
        "samples_epoch_002.png",
        "loss_curves.png",
    ):
        assert (tmp_path / name).is_file(), name
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    g = load_generator(state)
    z, y = torch.randn(3, 4), torch.tensor([1, 2, 3])
    _states_equal(g.state_dict(), result.generator.state_dict())
    assert g(z, y).shape == (3, 1, 8, 8)


def test_cgan_needs_labels():
    data = ImageData("x", torch.rand(64, 1, 8, 8), None, None)
    with pytest.raises(PplGenError, match="labelled"):
        train_gan(data, tiny("cgan"))


def test_batch_larger_than_data_is_refused():
    with pytest.raises(PplGenError, match="--batch-size"):
        train_gan(digits(16), tiny("gan"))


def test_collapse_monitor_warns():
    monitor = CollapseMonitor("vanilla", real_diversity=10.0, grace_epochs=2)
    with pytest.warns(GANTrainingWarning, match="discriminator loss collapsed"):
        monitor.check(1, 1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert monitor.check(1, 1.2, torch.rand(8, 1, 4, 4)) == []  # healthy
    same = torch.zeros(8, 1, 4, 4)
    with pytest.warns(GANTrainingWarning, match="mode collapse"):
        monitor.check(3, 1.2, same)
    assert CollapseMonitor("wgan-gp").check(1, -5.0) == []  # a critic has no loss floor


def test_collapse_monitor_allows_a_fresh_generator_to_grow():
    monitor = CollapseMonitor("vanilla", real_diversity=10.0, grace_epochs=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert monitor.check(1, 1.2, torch.rand(8, 1, 4, 4) * 0.01) == []


# ------------------------------------------------------------------------------ CycleGAN


def two_domains(n: int = 8) -> tuple[ImageData, ImageData]:
    g = torch.Generator().manual_seed(0)
    a = ImageData("a", torch.rand(n, 1, 8, 8, generator=g), None, None)
    b = ImageData("b", torch.rand(n, 1, 8, 8, generator=g) ** 2, None, None)
    return a, b


def tiny_cycle(**kw) -> CycleGANConfig:
    base = dict(
        epochs=3,
        decay_epochs=2,
        batch_size=2,
        ngf=2,
        ndf=2,
        n_blocks=1,
        n_layers=1,
        pool_size=3,
        device="cpu",
        progress=False,
    )
    base.update(kw)
    return CycleGANConfig(**base)


def test_cycle_generator_step_freezes_discriminators():
    config = tiny_cycle()
    nets = build_cyclegan(config, (1, 8, 8), (1, 8, 8))
    opt = torch.optim.Adam(list(nets["G_AB"].parameters()) + list(nets["G_BA"].parameters()))
    losses, fake_a, fake_b = cycle_generator_step(
        nets, opt, GANLoss("lsgan"), torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    )
    for k in ("D_A", "D_B"):
        assert all(p.grad is None for p in nets[k].parameters())
    assert losses["identity_loss"] > 0 and losses["cycle_loss"] > 0
    assert fake_a.shape == fake_b.shape == (2, 1, 8, 8)


def test_cycle_identity_needs_equal_channels():
    with pytest.raises(PplGenError, match="--lambda-identity"):
        build_cyclegan(tiny_cycle(), (1, 8, 8), (3, 8, 8))
    nets = build_cyclegan(tiny_cycle(lambda_identity=0), (1, 8, 8), (3, 8, 8))
    assert nets["G_AB"](torch.zeros(1, 1, 8, 8)).shape == (1, 3, 8, 8)


def test_cyclegan_resume_equals_uninterrupted(tmp_path):
    a, b = two_domains()
    full = train_cyclegan(a, b, tiny_cycle(out=str(tmp_path / "a")))
    config = tiny_cycle(out=str(tmp_path / "b"))
    train_cyclegan(a, b, config, stop_after=2)
    resumed = train_cyclegan(a, b, config, resume=True)
    for k in full.nets:
        _states_equal(full.nets[k].state_dict(), resumed.nets[k].state_dict())
    for k in ("A", "B"):
        assert len(full.pools[k]) == len(resumed.pools[k]) == 3
        for x, y in zip(full.pools[k].images, resumed.pools[k].images, strict=True):
            assert torch.equal(x, y)
    assert full.history["g_loss"] == resumed.history["g_loss"]
    state = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert state["epoch"] == 3 and set(state["pools"]) == {"A", "B"}
    assert (tmp_path / "b" / "samples_epoch_003.png").is_file()
