"""Deterministic autoencoders: shapes, penalties (exact Jacobian), corruption, the linear
autoencoder against PCA, training, checkpoint resume, and the latent-Gaussian generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppl_gen.autoencoders import (
    ConvAutoencoder,
    MLPAutoencoder,
    contractive_penalty,
    corrupt,
    encoder_jacobian,
    fit_full_batch,
    fit_latent_gaussian,
    load_autoencoder,
    make_autoencoder,
    mlp_contractive_penalty,
    principal_angles_degrees,
    reconstruction_errors,
    sample_decoded,
    sparsity_penalty,
    train_autoencoder,
    variant_config,
)
from ppl_gen.core.checkpoint import save_checkpoint
from ppl_gen.core.errors import PplGenError
from ppl_gen.data.datasets import load_dataset
from ppl_gen.engine import seed_everything
from ppl_gen.jobs.train_autoencoder import AutoencoderJob, run_train_autoencoder


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def _autograd_frobenius(encode, x: torch.Tensor) -> torch.Tensor:
    """Reference: the full Jacobian of each row by torch.autograd.functional.jacobian."""
    out = []
    for row in x:
        jac = torch.autograd.functional.jacobian(lambda v: encode(v.unsqueeze(0)).squeeze(0), row)
        out.append(jac.pow(2).sum())
    return torch.stack(out)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_shapes_and_reconstruction_in_unit_interval(arch):
    model = make_autoencoder(arch, 64, (8, 8), 5, (16,))
    x = torch.rand(7, 64)
    h, raw = model(x)
    assert h.shape == (7, 5) and raw.shape == (7, 64)
    with torch.no_grad():
        rec = model.reconstruct(x)
    assert rec.shape == (7, 64) and float(rec.min()) >= 0 and float(rec.max()) <= 1
    assert model.reconstruction_loss(raw, x).shape == (7,)
    # images (N, H, W) are accepted as well as flat rows
    assert torch.allclose(model.encode(x.reshape(7, 8, 8)), h)


def test_bad_shapes_raise_one_line_errors():
    model = MLPAutoencoder(64, 5, (16,))
    with pytest.raises(PplGenError, match="64 values"):
        model.encode(torch.rand(3, 10))
    with pytest.raises(PplGenError, match="latent_dim"):
        model.decode(torch.rand(3, 4))
    with pytest.raises(PplGenError, match="^arch conv"):
        ConvAutoencoder((10, 10))
    with pytest.raises(PplGenError, match="^arch "):
        make_autoencoder("rnn", 64, (8, 8), 5)
    with pytest.raises(PplGenError, match="^activation "):
        MLPAutoencoder(64, 5, (16,), activation="swish")


@pytest.mark.parametrize(
    "model",
    [
        MLPAutoencoder(12, 3, (10, 7), activation="tanh"),
        MLPAutoencoder(12, 4, (9,), activation="sigmoid"),
        ConvAutoencoder((8, 8), 3, (4, 6)),
    ],
    ids=["mlp-tanh", "mlp-sigmoid", "conv"],
)
def test_contractive_penalty_equals_autograd_jacobian_norm(model):
    torch.manual_seed(0)
    model = model.double()
    x = torch.rand(5, model.data_dim, dtype=torch.float64)
    penalty = contractive_penalty(model.encode, x)
    reference = _autograd_frobenius(model.encode, x)
    assert penalty.shape == (5,)
    torch.testing.assert_close(penalty, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "elu"])
@pytest.mark.parametrize("hidden", [(), (9,)])
def test_closed_form_mlp_penalty_equals_autograd_jacobian_norm(activation, hidden):
    torch.manual_seed(0)
    model = MLPAutoencoder(12, 4, hidden, activation=activation).double()
    x = torch.randn(6, 12, dtype=torch.float64)
    closed = mlp_contractive_penalty(model.encoder, x)
    assert closed is not None
    reference = _autograd_frobenius(model.encode, x)
    torch.testing.assert_close(closed, reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.contractive_penalty(x), reference, rtol=1e-12, atol=1e-12)
    # gradients of the closed form equal those of the full-Jacobian penalty
    params = list(model.encoder.parameters())

    def grads(value: torch.Tensor) -> list[torch.Tensor]:
        out = torch.autograd.grad(value.sum(), params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, out, strict=True)]

    for a, b in zip(
        grads(model.contractive_penalty(x)),
        grads(contractive_penalty(model.encode, x)),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_deeper_mlps_use_the_full_jacobian():
    model = MLPAutoencoder(12, 3, (10, 7)).double()
    x = torch.randn(4, 12, dtype=torch.float64)
    assert mlp_contractive_penalty(model.encoder, x) is None
    torch.testing.assert_close(model.contractive_penalty(x), _autograd_frobenius(model.encode, x))


def test_contractive_penalty_of_a_linear_encoder_is_the_weight_norm():
    model = MLPAutoencoder(10, 3, (), output="linear").double()
    x = torch.randn(4, 10, dtype=torch.float64)
    expected = model.encoder[0].weight.pow(2).sum().expand(4)
    torch.testing.assert_close(contractive_penalty(model.encode, x), expected)
    assert encoder_jacobian(model.encode, x).shape == (4, 3, 10)


def test_contractive_penalty_is_differentiable_in_the_parameters():
    model = MLPAutoencoder(12, 3, (8,), activation="sigmoid")
    contractive_penalty(model.encode, torch.rand(6, 12)).sum().backward()
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads[:-1])


def test_sparsity_penalty_is_l1():
    h = torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.5, -0.5]])
    torch.testing.assert_close(sparsity_penalty(h), torch.tensor([3.0, 1.5]))


def test_corruptions():
    x = torch.full((200, 50), 0.5)
    gen = torch.Generator().manual_seed(0)
    noisy = corrupt(x, "gaussian", 0.2, gen)
    assert abs(float((noisy - x).std()) - 0.2) < 0.01
    masked = corrupt(x, "masking", 0.3, torch.Generator().manual_seed(0))
    zero_fraction = float((masked == 0).float().mean())
    assert abs(zero_fraction - 0.3) < 0.02
    assert bool(((masked == 0) | (masked == x)).all())
    again = corrupt(x, "masking", 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(masked, again)
    for kind, level, flag in (
        ("salt", 0.1, "^noise must"),
        ("masking", 1.0, "^noise_level"),
        ("gaussian", -0.1, "^noise_level"),
    ):
        with pytest.raises(PplGenError, match=flag):
            corrupt(x, kind, level)


def test_variant_config_defaults_and_conflicts():
    assert variant_config("dae").noise == "gaussian"
    assert variant_config("dae", noise="masking").noise_level == 0.25
    assert variant_config("sae").sparsity > 0 and variant_config("cae").contractive > 0
    with pytest.raises(PplGenError, match="^noise applies to dae"):
        variant_config("ae", noise="gaussian")
    with pytest.raises(PplGenError, match="^contractive applies to cae"):
        variant_config("sae", contractive=0.1)
    with pytest.raises(PplGenError, match="model must be one of"):
        variant_config("vae")


def test_linear_autoencoder_spans_the_pca_subspace(digits):
    """Baldi & Hornik (1989): the squared-error optimum of a linear autoencoder spans the
    leading principal subspace.  Largest principal angle to scikit-learn's PCA < 1 degree."""
    from sklearn.decomposition import PCA

    x = digits.train.double()
    torch.manual_seed(0)
    model = MLPAutoencoder(64, 5, (), output="linear").double()
    fit_full_batch(model, x, max_iter=1000)
    decoder_basis = model.decoder[0].weight.detach().numpy()  # (64, 5)
    pca = PCA(5).fit(x.numpy())
    angles = principal_angles_degrees(decoder_basis, pca.components_.T)
    assert angles.max() < 1.0, angles
    # and the reconstruction error matches PCA's (the optimum, not just the subspace)
    pca_error = ((pca.inverse_transform(pca.transform(x.numpy())) - x.numpy()) ** 2).sum(1).mean()
    ae_error = float(reconstruction_errors(model, x).mean())
    assert ae_error == pytest.approx(pca_error, rel=1e-4)


@pytest.mark.parametrize("variant", ["ae", "dae", "sae", "cae"])
def test_training_reduces_validation_loss(digits, variant):
    torch.manual_seed(0)
    model = MLPAutoencoder(64, 8, (32,))
    before = float(reconstruction_errors(model, digits.val).mean())
    config = variant_config(variant, epochs=3, batch_size=64, lr=3e-3, progress=False, device="cpu")
    result = train_autoencoder(model, digits, config)
    assert result.epochs == 3 and result.iterations == 3 * -(-digits.train.shape[0] // 64)
    assert result.history["val_reconstruction"][-1] < 0.8 * before


def _run(data, ckpt, resume=False, hidden=(16,), **overrides):
    seed_everything(0)
    model = MLPAutoencoder(64, 4, hidden)
    settings = {"epochs": 2, "batch_size": 100, "progress": False, "device": "cpu", **overrides}
    config = variant_config("dae", checkpoint=str(ckpt) if ckpt else None, **settings)
    result = train_autoencoder(model, data, config, resume=resume)
    return model, result


@pytest.mark.parametrize("binarize", ["none", "dynamic"])
def test_resume_continues_exactly(digits, tmp_path, binarize):
    data = load_dataset("digits", seed=0, binarize=binarize) if binarize != "none" else digits
    ckpt = tmp_path / "ae.pt"
    straight, full = _run(data, None)
    _, first = _run(data, ckpt, stop_after=1)
    assert first.epochs == 1 and load_autoencoder(str(ckpt), "cpu")[1]["epoch"] == 1
    resumed, result = _run(data, ckpt, resume=True)
    assert result.resumed_from == 1 and result.epochs == 2
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert result.history["train_loss"] == full.history["train_loss"]
    assert result.history["val_reconstruction"] == full.history["val_reconstruction"]
    model, state = load_autoencoder(str(ckpt), "cpu")
    assert state["kind"] == "autoencoder" and state["epoch"] == 2
    assert state["spec"]["model"] == straight.spec()
    for key, value in straight.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_resume_may_extend_epochs_and_refuses_other_changes(digits, tmp_path):
    ckpt = tmp_path / "ae.pt"
    _run(digits, ckpt, epochs=1)
    _, longer = _run(digits, ckpt, resume=True, epochs=3)
    assert longer.epochs == 3 and longer.resumed_from == 1
    with pytest.raises(PplGenError, match="^lr 0.01 differs from the checkpoint's 0.001"):
        _run(digits, ckpt, resume=True, epochs=4, lr=0.01)
    with pytest.raises(PplGenError, match="^noise_level 0.5 differs"):
        _run(digits, ckpt, resume=True, epochs=4, noise_level=0.5)
    with pytest.raises(PplGenError, match="^hidden \\[8\\] differs"):
        _run(digits, ckpt, resume=True, epochs=4, hidden=(8,))
    other = load_dataset("digits", seed=1)
    with pytest.raises(PplGenError, match="^data differ"):
        _run(other, ckpt, resume=True, epochs=4)
    fake = {"kind": "dcgan", "config": {}, "image_shape": [1, 28, 28], "generator": {}}
    save_checkpoint(tmp_path / "gan.pt", fake)
    with pytest.raises(PplGenError, match="'dcgan' run, not 'autoencoder'"):
        _run(digits, tmp_path / "gan.pt", resume=True)


def test_same_seed_gives_identical_weights(tmp_path):
    def job(folder, seed=0):
        summary = run_train_autoencoder(
            AutoencoderJob(
                variant="cae",
                latent_dim=3,
                hidden=(8,),
                epochs=1,
                seed=seed,
                device="cpu",
                out=tmp_path / folder,
                progress=False,
            )
        )
        return load_autoencoder(summary["checkpoint"], "cpu")[0].state_dict()

    a, b, c = job("a"), job("b"), job("c", seed=1)
    for key, value in a.items():
        assert torch.equal(value, b[key]), key
    assert not torch.equal(a["encoder.0.weight"], c["encoder.0.weight"])
    for name in ("metrics.json", "loss_curves.png", "samples.png", "reconstructions.png"):
        assert (tmp_path / "a" / name).is_file(), name


def test_training_rejects_data_of_the_wrong_width(digits):
    with pytest.raises(PplGenError, match="^data: the autoencoder takes 10 values"):
        train_autoencoder(MLPAutoencoder(10, 2, (4,)), digits, variant_config("ae", epochs=1))


def test_latent_gaussian_generator():
    torch.manual_seed(0)
    true_cov = torch.tensor([[2.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    codes = torch.distributions.MultivariateNormal(
        torch.tensor([1.0, -1.0]).double(), true_cov
    ).sample((20000,))
    gaussian = fit_latent_gaussian(codes)
    np.testing.assert_allclose(gaussian.mean.numpy(), codes.mean(0).numpy(), atol=1e-12)
    np.testing.assert_allclose(
        gaussian.covariance.numpy(), np.cov(codes.numpy().T, bias=True), rtol=1e-4
    )
    draws = gaussian.sample(20000, torch.Generator().manual_seed(1))
    np.testing.assert_allclose(np.cov(draws.numpy().T), gaussian.covariance.numpy(), atol=0.06)
    model = MLPAutoencoder(64, 2, (8,)).double()
    images, z = sample_decoded(model.decode, gaussian, 5)
    assert images.shape == (5, 64) and z.shape == (5, 2)
    with pytest.raises(PplGenError, match="N >= 2"):
        fit_latent_gaussian(codes[:1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_on_cuda(digits):
    model = MLPAutoencoder(64, 4, (16,))
    train_autoencoder(model, digits, variant_config("cae", epochs=1, progress=False, device="cuda"))
    assert next(model.parameters()).is_cuda
