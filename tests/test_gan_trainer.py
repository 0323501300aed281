"""The GAN and CycleGAN trainers: D frozen during the G step, fakes detached for D, exact
resume, the learning-rate schedule on a longer resume, seeding, collapse warnings and
outputs, and no Pyro.  Tiny networks on tiny data."""

from __future__ import annotations

import os
import subprocess
import sys
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
    with pytest.raises(PplGenError, match="batch_size 32 exceeds"):
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
    with pytest.raises(PplGenError, match="lambda_identity"):
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


# ------------------------------------------------------------------------------ engine


def images28(n: int = 16, seed: int = 0) -> ImageData:
    """``n`` random 28x28 grey images (DCGAN sizes) with 3 classes."""
    g = torch.Generator().manual_seed(seed)
    return ImageData("random", torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 3, 3)


def tiny_dcgan(**kw) -> GANConfig:
    return tiny("dcgan", batch_size=8, check_collapse=False, **kw)


def assert_same_tree(a, b, where: str = "") -> None:
    """Equal nested dicts / lists of tensors and numbers (tensors with ``torch.equal``)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_same_tree(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_tree(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


GAN_COMPONENTS = ("generator", "discriminator", "opt_g", "opt_d", "sched_g", "sched_d")


def test_same_seed_twice_gives_identical_weights():
    data = images28()
    a, b = (train_gan(data, tiny_dcgan(epochs=1, seed=3)) for _ in range(2))
    assert_same_tree(a.generator.state_dict(), b.generator.state_dict())
    assert_same_tree(a.discriminator.state_dict(), b.discriminator.state_dict())
    other = train_gan(data, tiny_dcgan(epochs=1, seed=4))
    assert not torch.equal(
        next(iter(a.generator.parameters())), next(iter(other.generator.parameters()))
    )
    x, y = two_domains()
    c1, c2 = (train_cyclegan(x, y, tiny_cycle(epochs=1, decay_epochs=0)) for _ in range(2))
    for k in c1.nets:
        assert_same_tree(c1.nets[k].state_dict(), c2.nets[k].state_dict(), k)


def test_dcgan_resume_is_bit_exact(tmp_path):
    data = images28()
    train_gan(data, tiny_dcgan(epochs=2, decay_epochs=1, out=str(tmp_path / "a")))
    config = tiny_dcgan(epochs=2, decay_epochs=1, out=str(tmp_path / "b"))
    assert train_gan(data, config, stop_after=1).epochs == 1
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 1
    resumed = train_gan(data, config, resume=True)
    assert resumed.epochs == 2 and resumed.history["epoch"] == [1, 2]
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    for key in (*GAN_COMPONENTS, "rng", "iterations", "image_shape", "num_classes", "kind"):
        assert_same_tree(a[key], b[key], key)
    for key in ("d_loss", "g_loss", "lr"):
        assert a["history"][key] == b["history"][key], key
    assert a["kind"] == "dcgan" and a["config"]["latent_dim"] == 4


def test_cyclegan_resume_is_bit_exact(tmp_path):
    x, y = two_domains()
    train_cyclegan(x, y, tiny_cycle(epochs=2, decay_epochs=1, out=str(tmp_path / "a")))
    config = tiny_cycle(epochs=2, decay_epochs=1, out=str(tmp_path / "b"))
    train_cyclegan(x, y, config, stop_after=1)
    train_cyclegan(x, y, config, resume=True)
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    for key in ("nets", "opts", "scheds", "pools", "rng", "iterations", "image_shapes"):
        assert_same_tree(a[key], b[key], key)
    assert a["history"]["g_loss"] == b["history"]["g_loss"]
    for pool in a["pools"].values():  # tensors only, and the pools were used
        assert all(isinstance(v, torch.Tensor) for v in pool.values())
        assert pool["images"].shape[0] == 3


@pytest.mark.parametrize("new_decay", [2, 4])
def test_longer_resume_recomputes_the_lr_schedule(tmp_path, new_decay):
    """N = 2 epochs all decaying, resumed to 2N: the old schedule would reach lr 0 and then
    go negative; the recomputed one equals a fresh 2N-epoch run's from epoch N on."""
    data = digits(64)
    out = str(tmp_path / "run")
    first = train_gan(data, tiny("gan", epochs=2, decay_epochs=2, out=out))
    assert first.history["lr"] == pytest.approx([2e-4 * 2 / 3, 2e-4 / 3])
    longer = tiny("gan", epochs=4, decay_epochs=new_decay, out=out)
    resumed = train_gan(data, longer, resume=True)
    fresh = train_gan(data, tiny("gan", epochs=4, decay_epochs=new_decay))
    assert resumed.history["epoch"] == [1, 2, 3, 4]
    assert resumed.history["lr"][2:] == pytest.approx(fresh.history["lr"][2:])
    assert resumed.history["lr"][2] > 0 and min(resumed.history["lr"]) > 0
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    for opt in ("opt_g", "opt_d"):  # the rate after the last epoch: >= 0, as a fresh run's
        lr = state[opt]["param_groups"][0]["lr"]
        assert lr >= 0
        assert lr == pytest.approx(_final_lr(4, new_decay))


def _final_lr(epochs: int, decay: int) -> float:
    from ppl_gen.gan.schedules import LinearDecay

    return 2e-4 * LinearDecay(epochs - decay, decay)(epochs)


def test_cyclegan_longer_resume_never_drives_the_lr_negative(tmp_path):
    x, y = two_domains()
    out = str(tmp_path / "c")
    train_cyclegan(x, y, tiny_cycle(epochs=2, decay_epochs=2, out=out))
    resumed = train_cyclegan(x, y, tiny_cycle(epochs=4, decay_epochs=2, out=out), resume=True)
    fresh = train_cyclegan(x, y, tiny_cycle(epochs=4, decay_epochs=2))
    assert resumed.history["lr"][2:] == pytest.approx(fresh.history["lr"][2:])
    assert min(resumed.history["lr"]) > 0


@pytest.mark.parametrize(
    ("change", "name"), [({"lr": 1e-3}, "lr"), ({"latent_dim": 5}, "latent_dim")]
)
def test_resume_refuses_other_settings(tmp_path, change, name):
    data = digits(64)
    out = str(tmp_path / "run")
    train_gan(data, tiny("gan", epochs=1, out=out))
    with pytest.raises(PplGenError, match=f"^{name} .* differs from the checkpoint"):
        train_gan(data, tiny("gan", epochs=2, out=out, **change), resume=True)
    with pytest.raises(PplGenError, match="data differ"):
        train_gan(digits(96), tiny("gan", epochs=2, out=out), resume=True)
    with pytest.raises(PplGenError, match="holds a 'gan' run"):
        train_gan(data, tiny("cgan", epochs=2, out=out), resume=True)
    # allowed: more epochs, and the collapse check switched off
    result = train_gan(data, tiny("gan", epochs=2, out=out, check_collapse=False), resume=True)
    assert result.epochs == 2


def test_gan_modules_do_not_import_pyro_nor_select_a_backend(tmp_path):
    code = (
        "import sys, matplotlib, pkgutil, importlib\n"
        "import ppl_gen.gan\n"
        "for m in pkgutil.iter_modules(ppl_gen.gan.__path__):\n"
        "    importlib.import_module('ppl_gen.gan.' + m.name)\n"
        "import ppl_gen.viz.gan as viz\n"
        "from ppl_gen.gan.trainer import train_gan\n"
        "from ppl_gen.gan.cycle_trainer import train_cyclegan\n"
        "assert 'pyro' not in sys.modules, 'pyro imported'\n"
        "viz.plot_gan_losses({'epoch': [1, 2], 'd_loss': [1.0, 0.5]}, sys.argv[1])\n"
        "assert matplotlib.get_backend().lower() == 'template', matplotlib.get_backend()\n"
        "assert 'pyro' not in sys.modules\n"
    )
    env = {**os.environ, "MPLBACKEND": "template"}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "c.png")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c.png").is_file()
