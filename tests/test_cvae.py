"""The conditional VAE: rows with label columns, the model's sites, bounds on log p(x|y)
against numerical integration, training through the shared trainer, checkpoints and
class-conditional sampling."""

from __future__ import annotations

import math

import pyro
import pytest
import torch

import ppl_gen
from ppl_gen.autoencoders.conditional import (
    build_cvae,
    cvae_bounds,
    load_cvae,
    sample_classes,
    train_cvae,
)
from ppl_gen.core.errors import PplGenError
from ppl_gen.data.datasets import binarize_batch
from ppl_gen.guides import ConditionalEncoderGuide
from ppl_gen.models import CVAE
from ppl_gen.models.cvae import one_hot, with_label_columns

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def digits():
    return ppl_gen.load_dataset("digits", binarize="dynamic", seed=0)


def test_label_columns_and_binarisation_keep_the_one_hot(digits):
    aug = with_label_columns(digits)
    assert aug.data_dim == 74 and aug.image_shape == (74,)
    torch.testing.assert_close(aug.train[:, 64:], one_hot(digits.train_labels, 10))
    torch.testing.assert_close(aug.test[:, :64], digits.test)
    binary = binarize_batch(aug.train, torch.Generator().manual_seed(0))
    assert torch.equal(binary[:, 64:], aug.train[:, 64:])


def test_unlabelled_data_is_refused(tmp_path):
    import numpy as np

    np.save(tmp_path / "x.npy", np.random.default_rng(0).uniform(size=(30, 4)))
    splits = ppl_gen.load_dataset(str(tmp_path / "x.npy"))
    with pytest.raises(PplGenError, match="labelled"):
        with_label_columns(splits)


def test_model_sites_put_the_likelihood_on_the_image_only():
    model = CVAE(6, 3, 2, (8,))
    guide = ConditionalEncoderGuide(model)
    rows = torch.cat(
        [torch.bernoulli(torch.full((5, 6), 0.5)), one_hot(torch.tensor([0, 1, 2, 0, 1]), 3)], 1
    )
    guide_trace = pyro.poutine.trace(guide).get_trace(rows)
    trace = pyro.poutine.trace(pyro.poutine.replay(model, guide_trace)).get_trace(rows)
    assert trace.nodes["x"]["value"].shape == (5, 6)
    assert trace.nodes["z"]["value"].shape == (5, 2)
    assert trace.nodes["x"]["fn"].event_shape == (6,)
    with pytest.raises(PplGenError, match="one-hot"):
        model(torch.rand(5, 6))


def test_iwae_approaches_log_p_x_given_y_from_numerical_integration():
    """Z = 1: log p(x|y) = log int N(z; 0, 1) p(x | z, y) dz by quadrature on a fine grid;
    IWAE-K with large K must approach it from below and the ELBO must lie below it."""
    torch.manual_seed(0)
    model = CVAE(5, 2, latent_dim=1, hidden=(6,)).double()
    guide = ConditionalEncoderGuide(model).double()
    images = torch.bernoulli(torch.full((4, 5), 0.5, dtype=torch.float64))
    labels = torch.tensor([0, 1, 1, 0])
    z = torch.linspace(-9, 9, 20001, dtype=torch.float64).reshape(-1, 1, 1)  # (G, 1, 1)
    with torch.no_grad():
        out = model.decoder_output(z.expand(-1, 4, 1), one_hot(labels, 2, images))  # (G, 4, 5)
        log_lik = model.likelihood(out).log_prob(images)  # (G, 4)
        log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z.reshape(-1, 1))
        dz = float(z[1] - z[0])
        exact = torch.logsumexp(log_lik + log_prior, dim=0) + math.log(dz)
    bounds = cvae_bounds(model, guide, images, labels, k=20000)
    assert bool((bounds.elbo < exact).all())
    torch.testing.assert_close(bounds.iwae, exact, atol=0.02, rtol=0)


def test_training_checkpoint_and_sampling(digits, tmp_path):
    ckpt = tmp_path / "cvae.pt"
    config = ppl_gen.TrainConfig(
        epochs=3, batch_size=64, progress=False, device="cpu", checkpoint=str(ckpt)
    )
    torch.manual_seed(0)
    fit = train_cvae(digits, config, latent_dim=3, hidden=(32,), data_spec={"name": "digits"})
    history = fit.result.history
    assert history["val_elbo"][-1] > history["val_elbo"][0]
    model, guide, state = load_cvae(str(ckpt), "cpu")
    assert state["kind"] == "cvae" and state["spec"]["data"] == {"name": "digits"}
    images, labels = digits.test[:20], digits.test_labels[:20]
    pyro.set_rng_seed(1)
    a = cvae_bounds(fit.model, fit.guide, images, labels, k=5)
    pyro.set_rng_seed(1)
    b = cvae_bounds(model, guide, images, labels, k=5)
    torch.testing.assert_close(a.iwae, b.iwae)
    samples, y = sample_classes(model, [3, 7], 4)
    assert samples.shape == (8, 64) and y.tolist() == [3] * 4 + [7] * 4
    assert float(samples.min()) >= 0 and float(samples.max()) <= 1
    with pytest.raises(PplGenError, match="^classes"):
        sample_classes(model, [10], 1)


def test_conditioning_changes_the_samples(digits):
    model, _, _ = build_cvae(digits, latent_dim=2, hidden=(16,))
    z = torch.zeros(1, 2)
    assert not torch.allclose(
        model.decode_mean(z, torch.tensor([0])), model.decode_mean(z, torch.tensor([1]))
    )


def test_samples_fit_the_lenet_classifier_input():
    """Shape-only check of the class-agreement pipeline (an untrained LeNet)."""
    from ppl_gen.metrics.classifier import LeNet

    model = CVAE(784, 10, 4, (16,), image_shape=(28, 28))
    images, _ = sample_classes(model, range(10), 2)
    logits = LeNet()(images)
    assert logits.shape == (20, 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cvae_trains_samples_and_is_scored_on_cuda(digits):
    config = ppl_gen.TrainConfig(epochs=1, progress=False, device="cuda")
    fit = train_cvae(digits, config, latent_dim=2, hidden=(16,))
    images, labels = sample_classes(fit.model, [0, 1], 3)
    assert images.is_cuda and labels.is_cuda
    x = digits.test[:10].cuda()
    bounds = cvae_bounds(fit.model, fit.guide, x, digits.test_labels[:10].cuda(), k=3)
    assert bool(torch.isfinite(bounds.iwae).all())
