"""DANN (Ganin et al. JMLR 2016): networks, training step, resume, and a short run that
beats the source-only baseline on a tiny synthetic domain shift."""

import pytest
import torch

import ppl_gen.engine.loop as engine_loop
from ppl_gen.adaptation.dann import ArchConfig, build_dann
from ppl_gen.adaptation.dann_trainer import (
    DANNConfig,
    DomainData,
    accuracy,
    batch_indices,
    make_optimizer,
    match_channels,
    model_from_checkpoint,
    train_dann,
)
from ppl_gen.core.checkpoint import load_checkpoint
from ppl_gen.core.errors import PplGenError

TINY = ArchConfig(
    image_size=12,
    conv_channels=(8,),
    kernel_size=3,
    batch_norm=False,
    dropout=0.0,
    label_hidden=(32,),
    domain_hidden=(32,),
)


def _bars(labels: torch.Tensor) -> torch.Tensor:
    """(n, 12, 12) images with a vertical bar at a column set by the label (0..3)."""
    images = torch.zeros(len(labels), 12, 12)
    for i, col in enumerate((1 + 3 * labels).tolist()):
        images[i, 2:10, col : col + 2] = 1.0
    return images


def _domain(n: int, target: bool, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class signal: a bar in channel 0.  The target domain adds distractor bars at random
    positions in channels 1 and 2 (empty in the source): a network trained on the source
    alone never learns to ignore them."""
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.zeros(n, 3, 12, 12)
    x[:, 0] = _bars(y)
    if target:
        x[:, 1] = _bars(torch.randint(0, 4, (n,), generator=g))
        x[:, 2] = _bars(torch.randint(0, 4, (n,), generator=g))
    return (x + 0.1 * torch.rand(n, 3, 12, 12, generator=g)).clamp(0, 1), y


def _shift(seed: int = 0, n: int = 400) -> tuple[DomainData, DomainData]:
    g = torch.Generator().manual_seed(seed)
    xs, ys = _domain(n, False, g)
    xs_test, ys_test = _domain(n, False, g)
    xt, _ = _domain(n, True, g)
    xt_test, yt_test = _domain(n, True, g)
    return DomainData("source", xs, ys, xs_test, ys_test), DomainData(
        "target", xt, None, xt_test, yt_test
    )


def _config(mode: str, **kw) -> DANNConfig:
    kw = {"epochs": 10, "batch_size": 32, "device": "cpu", "progress": False, **kw}
    return DANNConfig(mode=mode, **kw)


def test_dann_beats_source_only_on_a_synthetic_shift():
    source, target = _shift()
    only = train_dann(source, target, _config("source-only"), arch=TINY)
    dann = train_dann(source, target, _config("dann"), arch=TINY)
    acc_only = accuracy(only.model, target.x_test, target.y_test)
    acc_dann = accuracy(dann.model, target.x_test, target.y_test)
    assert accuracy(only.model, source.x_test, source.y_test) > 0.95
    assert accuracy(dann.model, source.x_test, source.y_test) > 0.95
    assert acc_only < 0.7  # the shift is real
    assert acc_dann > 0.9
    assert acc_dann > acc_only + 0.25
    h = dann.history
    assert len(h["label_loss"]) == 10 and all(v is not None for v in h["domain_accuracy"])
    assert only.history["domain_loss"] == [None] * 10  # the target is never seen


def test_gradient_reversal_keeps_the_domain_classifier_confused():
    # The accuracy gain above is partly input standardisation (DANN's statistics include
    # the target); this isolates the reversal layer: same network, data, normalisation and
    # schedule, with lambda scheduled versus fixed at 0 (G_d trained, G_f not opposing it).
    source, target = _shift()
    dann = train_dann(source, target, _config("dann"), arch=TINY)
    control = train_dann(source, target, _config("dann", lambda_=0.0), arch=TINY)
    late_dann = sum(dann.history["domain_loss"][-3:]) / 3
    late_control = sum(control.history["domain_loss"][-3:]) / 3
    assert late_control < 0.1  # without reversal the domains are trivially told apart
    assert late_dann > 0.2 and late_dann > 5 * late_control


def test_paper_architecture_shapes():
    model = build_dann("paper")
    assert model.config.feature_dim() == 768  # 48 x 4 x 4
    out = model(torch.rand(5, 3, 28, 28))
    assert out.features.shape == (5, 768)
    assert out.class_logits.shape == (5, 10)
    assert out.domain_logits.shape == (5,)
    convs = [m for m in model.feature if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(32, (5, 5)), (48, (5, 5))]
    label = [m.out_features for m in model.label_head if isinstance(m, torch.nn.Linear)]
    domain = [m.out_features for m in model.domain_head if isinstance(m, torch.nn.Linear)]
    assert label == [100, 100, 10] and domain == [100, 1]


def test_learning_rate_schedule_follows_the_paper():
    model = build_dann("paper")
    optimizer, scheduler = make_optimizer(model, DANNConfig(), total_steps=100)
    lrs = []
    for _ in range(101):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.01)
    assert lrs[50] == pytest.approx(0.01 / (1 + 10 * 0.5) ** 0.75)
    assert lrs[100] == pytest.approx(0.01 / 11**0.75)
    assert optimizer.param_groups[0]["momentum"] == 0.9


def test_batches_are_half_source_half_target():
    pairs = list(batch_indices(100, 30, 16, torch.Generator().manual_seed(0)))
    assert len(pairs) == 6
    assert all(len(s) == 16 and len(t) == 16 for s, t in pairs)
    source = torch.cat([s for s, _ in pairs])
    assert len(set(source.tolist())) == 96  # each source image at most once per epoch


def test_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    source, target = _shift(n=96)
    full = train_dann(source, target, _config("dann", checkpoint=str(tmp_path / "a.pt")), arch=TINY)
    state = load_checkpoint(tmp_path / "a.pt")
    assert state["kind"] == "dann" and state["epoch"] == 10
    short = _config("dann", checkpoint=str(tmp_path / "b.pt"))
    # interrupt the same 10-epoch run right after its 4th checkpoint, then resume it
    calls = {"n": 0}
    real_save = engine_loop.save_checkpoint

    def save_then_stop(path, state):
        real_save(path, state)
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine_loop, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_dann(source, target, short, arch=TINY)
    monkeypatch.setattr(engine_loop, "save_checkpoint", real_save)
    assert load_checkpoint(tmp_path / "b.pt")["epoch"] == 4
    resumed = train_dann(source, target, short, arch=TINY, resume=True)
    for a, b in zip(
        full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert resumed.history["label_loss"] == full.history["label_loss"]
    rebuilt = model_from_checkpoint(load_checkpoint(tmp_path / "b.pt"))
    assert accuracy(rebuilt, target.x_test, target.y_test) == accuracy(
        full.model, target.x_test, target.y_test
    )


def test_greyscale_source_is_replicated_to_rgb_and_other_mismatches_refused():
    grey = DomainData(
        "mnist", torch.rand(4, 1, 28, 28), torch.zeros(4).long(), torch.rand(2, 1, 28, 28), None
    )
    rgb = DomainData("mnistm", torch.rand(4, 3, 28, 28), None, torch.rand(2, 3, 28, 28), None)
    s, t = match_channels(grey, rgb)
    assert s.x_train.shape == (4, 3, 28, 28) and torch.equal(s.x_train[:, 0], s.x_train[:, 2])
    assert t is rgb
    four = DomainData("rgba", torch.rand(4, 4, 28, 28), None, torch.rand(2, 4, 28, 28), None)
    with pytest.raises(PplGenError, match="channels"):
        match_channels(rgb, four)
    small = DomainData("small", torch.rand(4, 3, 14, 14), None, torch.rand(2, 3, 14, 14), None)
    with pytest.raises(PplGenError, match="sizes must match"):
        match_channels(rgb, small)


def test_unmatched_channels_are_refused_by_the_trainer():
    grey = DomainData(
        "mnist", torch.rand(4, 1, 12, 12), torch.zeros(4).long(), torch.rand(2, 1, 12, 12), None
    )
    rgb = DomainData("mnistm", torch.rand(4, 3, 12, 12), None, torch.rand(2, 3, 12, 12), None)
    with pytest.raises(PplGenError, match="^source"):
        train_dann(grey, rgb, _config("dann"), arch=TINY)


@pytest.mark.parametrize(
    "field,value,flag",
    [
        ("batch_size", 3, "^batch_size"),
        ("epochs", 0, "^epochs"),
        ("arch", "vgg", "^arch"),
        ("lr", -1.0, "^lr"),
    ],
)
def test_bad_config_names_the_parameter(field, value, flag):
    with pytest.raises(PplGenError, match=flag):
        DANNConfig(**{field: value}).validate()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_on_cuda():
    source, target = _shift(n=64)
    result = train_dann(
        source,
        target,
        DANNConfig(epochs=1, batch_size=32, device="cuda", progress=False),
        arch=TINY,
    )
    assert next(result.model.parameters()).is_cuda


def test_same_seed_twice_gives_identical_weights_and_another_seed_differs():
    source, target = _shift(n=48)
    a = train_dann(source, target, _config("dann", epochs=2), arch=TINY)
    b = train_dann(source, target, _config("dann", epochs=2), arch=TINY)
    c = train_dann(source, target, _config("dann", epochs=2, seed=5), arch=TINY)
    sa, sb, sc = (r.model.state_dict() for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_resume_refuses_a_changed_setting_and_follows_more_epochs(tmp_path):
    source, target = _shift(n=48)
    ckpt = str(tmp_path / "c.pt")
    train_dann(source, target, _config("dann", epochs=2, checkpoint=ckpt), arch=TINY)
    with pytest.raises(PplGenError, match="^lr 0.05 differs"):
        train_dann(
            source,
            target,
            _config("dann", epochs=2, lr=0.05, checkpoint=ckpt),
            arch=TINY,
            resume=True,
        )
    longer = train_dann(
        source, target, _config("dann", epochs=4, checkpoint=ckpt), arch=TINY, resume=True
    )
    assert longer.history["epoch"] == [1, 2, 3, 4]
    fresh = train_dann(source, target, _config("dann", epochs=4), arch=TINY)
    # the schedules follow the new total: the last epoch's lr and lambda match a fresh 4-epoch
    # run (earlier epochs ran on the 2-epoch schedule, so the weights differ)
    assert longer.history["lr"][-1] == pytest.approx(fresh.history["lr"][-1], rel=1e-12)
    assert longer.history["lambda"][-1] == pytest.approx(fresh.history["lambda"][-1], rel=1e-12)
    assert all(lr > 0 for lr in longer.history["lr"])


def _flat(value, prefix=""):
    """``{path: leaf}`` of a nested checkpoint entry (dicts, lists, tensors, numbers)."""
    if isinstance(value, dict):
        return {
            k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}/{key}").items()
        }
    if isinstance(value, (list, tuple)):
        return {
            k: v for i, item in enumerate(value) for k, v in _flat(item, f"{prefix}/{i}").items()
        }
    return {prefix: value}


@pytest.mark.parametrize("mode", ["dann", "source-only"])
def test_one_epoch_then_resume_equals_two_epochs_bit_for_bit(tmp_path, mode):
    source, target = _shift(n=64)
    straight = _config(mode, epochs=2, checkpoint=str(tmp_path / "straight.pt"))
    split = _config(mode, epochs=2, checkpoint=str(tmp_path / "split.pt"))
    full = train_dann(source, target, straight, arch=TINY)
    first = train_dann(source, target, split, arch=TINY, stop_after=1)
    assert first.history["epoch"] == [1] and load_checkpoint(tmp_path / "split.pt")["epoch"] == 1
    resumed = train_dann(source, target, split, arch=TINY, resume=True)
    sa, sb = full.model.state_dict(), resumed.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    a, b = load_checkpoint(tmp_path / "straight.pt"), load_checkpoint(tmp_path / "split.pt")
    for key in ("model", "optimizer", "scheduler", "rng"):
        fa, fb = _flat(a[key]), _flat(b[key])
        assert fa.keys() == fb.keys(), key
        for path, leaf in fa.items():
            if isinstance(leaf, torch.Tensor):
                assert torch.equal(leaf, fb[path]), f"{key}{path}"
            else:
                assert leaf == fb[path], f"{key}{path}"
    assert a["iterations"] == b["iterations"] and a["epoch"] == b["epoch"] == 2
    for key in ("label_loss", "domain_loss", "domain_accuracy", "lambda", "lr"):
        assert a["history"][key] == b["history"][key] == resumed.history[key]
    with pytest.raises(PplGenError, match="^stop_after"):
        train_dann(source, target, split, arch=TINY, stop_after=0)


def test_job_checks_name_parameters_and_write_nothing(tmp_path):
    from ppl_gen.jobs.dann import load_domains, run_dann_job

    out = tmp_path / "out"
    with pytest.raises(PplGenError, match="^pad_points must be at least 8"):
        run_dann_job("mnist", "mnistm", _config("dann"), out=out, pad_points=4)
    with pytest.raises(PplGenError, match="^source must be mnist, mnistm or a .npz"):
        run_dann_job("svhn", "mnistm", _config("dann"), out=out)
    with pytest.raises(PplGenError, match="^source .*nope.npz.*no such file"):
        load_domains(str(tmp_path / "nope.npz"), "mnist")
    with pytest.raises(PplGenError, match="^data_root .*no MNIST files"):
        load_domains("mnist", "mnistm", data_root=tmp_path)
    assert not out.exists()
