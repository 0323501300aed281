"""Sample-quality metrics for image generators, judged by the project's own MNIST classifier
(:mod:`ppl_gen.metrics.classifier`) instead of downloaded Inception weights.

* **FD-LeNet** -- the Fréchet distance ``||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))``
  (Heusel et al. 2017, eq. 6) between Gaussians fitted to the 128-D penultimate LeNet
  features of real and generated images, computed with
  :class:`torchmetrics.image.fid.FrechetInceptionDistance` given the LeNet feature extractor
  as a custom ``feature`` module (which works offline: torch-fidelity and Inception weights
  are only needed for the default integer ``feature``).  Its scale is that of LeNet features,
  so it is **not comparable to Inception FID** from the literature; compare it with the
  floor :func:`real_halves_fd` (two halves of the real test set) in the same units.
* **Classifier Inception score** -- ``exp(E_x KL(p(y|x) || p(y)))`` (Salimans et al. 2016,
  sec. 4) with the LeNet's class posterior, via :class:`torchmetrics.image.inception.InceptionScore`
  (one split); between 1 and 10 for MNIST.
* **Label agreement** -- the fraction of conditional samples the classifier assigns to the
  label they were generated for.
* **Mode coverage** -- the predicted-class histogram of samples against the uniform
  distribution: KL(histogram || uniform) in nats (0 = every class equally often, ln 10 =
  one class only) and the number of classes receiving at least ``min_fraction`` of their
  fair share.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore

from ppl_gen.core.device import module_device
from ppl_gen.core.errors import PplGenError, require, require_positive_int
from ppl_gen.data.images import to_unit


class _LeNetFeatures(nn.Module):
    """Feature extractor for torchmetrics: images ``(B, C, 28, 28)`` in [0, 1] → ``(B, 128)``."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = int(classifier.feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x.float())


class _LeNetLogits(nn.Module):
    """Class logits ``(B, 10)`` of images in [0, 1] for torchmetrics' Inception score."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.float())


def _check_images(name: str, x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[1] not in (1, 3) or tuple(x.shape[2:]) != (28, 28):
        raise PplGenError(
            f"{name}: the MNIST classifier scores (N, 1 or 3, 28, 28) images, got {tuple(x.shape)}"
        )
    require(x.shape[0] >= 2, f"{name}: need at least 2 images, got {x.shape[0]}")


def _chunks(x: torch.Tensor, batch_size: int, device: torch.device):
    for i in range(0, x.shape[0], batch_size):
        yield x[i : i + batch_size].to(device)


class FDLeNet:
    """FD-LeNet with the real statistics computed once and reused for several fake sets.

    Args:
        classifier: a :class:`ppl_gen.metrics.classifier.LeNet` (eval mode); its device is used.
        real: ``(N, C, 28, 28)`` real images in [0, 1].
        batch_size: images per feature pass.

    ``fd(fake)`` → the distance (squared feature units) between ``real`` and ``fake``.
    """

    def __init__(self, classifier: nn.Module, real: torch.Tensor, batch_size: int = 1000) -> None:
        _check_images("real", real)
        self.device = module_device(classifier)
        self.batch_size = batch_size
        self.metric = FrechetInceptionDistance(
            feature=_LeNetFeatures(classifier), reset_real_features=False, normalize=True
        ).to(self.device)
        with torch.no_grad():
            for chunk in _chunks(real, batch_size, self.device):
                self.metric.update(chunk, real=True)

    @torch.no_grad()
    def fd(self, fake: torch.Tensor) -> float:
        """FD-LeNet of ``fake: (M, C, 28, 28)`` in [0, 1] against the real set."""
        _check_images("fake", fake)
        self.metric.reset()
        for chunk in _chunks(fake, self.batch_size, self.device):
            self.metric.update(chunk, real=False)
        return float(self.metric.compute())


def fd_lenet(
    classifier: nn.Module, real: torch.Tensor, fake: torch.Tensor, batch_size: int = 1000
) -> float:
    """FD-LeNet between ``real`` and ``fake`` (each ``(N, C, 28, 28)`` in [0, 1])."""
    return FDLeNet(classifier, real, batch_size).fd(fake)


def real_halves_fd(
    classifier: nn.Module, real: torch.Tensor, seed: int = 0, batch_size: int = 1000
) -> float:
    """The floor of FD-LeNet at this sample size: the distance between two random halves of
    ``real: (N, C, 28, 28)`` (N >= 4), i.e. what a perfect generator would score against
    ``N / 2`` real images."""
    perm = torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(seed))
    half = real.shape[0] // 2
    return fd_lenet(classifier, real[perm[:half]], real[perm[half : 2 * half]], batch_size)


@torch.no_grad()
def classifier_inception_score(
    classifier: nn.Module, images: torch.Tensor, batch_size: int = 1000
) -> float:
    """``exp(E_x KL(p(y|x) || p(y)))`` of ``images: (N, C, 28, 28)`` in [0, 1] under the
    classifier (one split; 1 = uninformative or one class only, 10 = confident and
    uniform over the 10 digits)."""
    _check_images("images", images)
    device = module_device(classifier)
    with warnings.catch_warnings():  # buffer-size notice; std of a single split
        warnings.simplefilter("ignore", UserWarning)
        metric = InceptionScore(feature=_LeNetLogits(classifier), splits=1).to(device)
        for chunk in _chunks(images, batch_size, device):
            metric.update(chunk.float())
        mean, _ = metric.compute()
    return float(mean)


@torch.no_grad()
def predict_classes(
    classifier: nn.Module, images: torch.Tensor, batch_size: int = 1000
) -> torch.Tensor:
    """Predicted digit ``(N,)`` int64 (CPU) of ``images: (N, C, 28, 28)`` in [0, 1]."""
    device = module_device(classifier)
    return torch.cat([classifier(c).argmax(-1).cpu() for c in _chunks(images, batch_size, device)])


def label_agreement(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``images: (N, C, 28, 28)`` classified as their requested ``labels: (N,)``."""
    _check_images("images", images)
    require(labels.shape == (images.shape[0],), "labels must have shape (N,)")
    return float((predict_classes(classifier, images) == labels.cpu()).float().mean())


def mode_coverage(
    predictions: torch.Tensor, num_classes: int = 10, min_fraction: float = 0.1
) -> dict:
    """Predicted-class histogram of generated samples against the uniform distribution.

    Args:
        predictions: ``(N,)`` predicted classes in 0..num_classes-1.
        num_classes: K.
        min_fraction: a class is *covered* when it receives at least ``min_fraction x N / K``
            samples.

    Returns:
        ``{"histogram": [K fractions], "kl_to_uniform": nats, "classes_covered": int,
        "num_classes": K}``; ``kl_to_uniform = sum_k h_k log(K h_k)`` (0 for a uniform
        histogram, ln K for a single class).
    """
    require_positive_int("num_classes", num_classes)
    require(predictions.numel() > 0, "predictions: no samples")
    counts = torch.bincount(predictions.flatten().cpu(), minlength=num_classes).double()
    h = counts / counts.sum()
    nz = h > 0
    kl = float((h[nz] * (h[nz] * num_classes).log()).sum())
    covered = int((counts >= min_fraction * counts.sum() / num_classes).sum())
    return {
        "histogram": [round(float(v), 6) for v in h],
        "kl_to_uniform": kl,
        "classes_covered": covered,
        "num_classes": num_classes,
    }


@torch.no_grad()
def sample_images(
    generator: nn.Module,
    n: int,
    *,
    labels: torch.Tensor | None = None,
    seed: int = 0,
    batch_size: int = 1000,
) -> torch.Tensor:
    """Draw ``n`` images ``(n, C, H, W)`` in [0, 1] (CPU) from a trained generator.

    Args:
        generator: ``forward(z[, y])`` → images in [-1, 1], with attribute ``latent_dim``.
        labels: ``(n,)`` labels for a conditional generator (``None`` otherwise).
        seed: seed of the noise (a CPU generator, so samples are the same on every device).
    """
    require_positive_int("n_samples", n)
    device = module_device(generator)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator.latent_dim, generator=g)
    out = []
    for i in range(0, n, batch_size):
        cond = () if labels is None else (labels[i : i + batch_size].to(device),)
        out.append(to_unit(generator(z[i : i + batch_size].to(device), *cond)).cpu())
    return torch.cat(out)


def balanced_labels(n: int, num_classes: int = 10) -> torch.Tensor:
    """``(n,)`` labels cycling 0..K-1 (each class ``n / K`` times when K divides n)."""
    return torch.arange(n) % num_classes


def evaluate_generator(
    generator: nn.Module,
    classifier: nn.Module,
    real: torch.Tensor,
    n_samples: int = 10000,
    *,
    seed: int = 0,
) -> dict:
    """All sample metrics of a (conditional) generator of 28x28 images.

    Args:
        generator: see :func:`sample_images`; conditional when ``generator.num_classes``.
        classifier: the MNIST LeNet.
        real: ``(N, C, 28, 28)`` real test images in [0, 1] (N >= 4).
        n_samples: samples drawn.

    Returns:
        ``fd_lenet``, ``fd_lenet_real_halves`` (floor), ``fd_ratio`` (their ratio),
        ``inception_score``, ``mode_coverage`` (see :func:`mode_coverage`), and for
        conditional generators ``label_agreement``; ``n_samples`` and ``n_real``.
    """
    num_classes = getattr(generator, "num_classes", None)
    labels = balanced_labels(n_samples, num_classes) if num_classes else None
    fake = sample_images(generator, n_samples, labels=labels, seed=seed)
    if tuple(fake.shape[2:]) != (28, 28):
        raise PplGenError(
            f"the MNIST classifier scores 28x28 images; this generator makes "
            f"{fake.shape[2]}x{fake.shape[3]}"
        )
    fd = fd_lenet(classifier, real, fake)
    floor = real_halves_fd(classifier, real, seed)
    pred = predict_classes(classifier, fake)
    result = {
        "n_samples": n_samples,
        "n_real": int(real.shape[0]),
        "fd_lenet": fd,
        "fd_lenet_real_halves": floor,
        "fd_ratio": fd / floor if floor > 0 else math.inf,
        "inception_score": classifier_inception_score(classifier, fake),
        "mode_coverage": mode_coverage(pred),
    }
    if labels is not None:
        result["label_agreement"] = float((pred == labels).float().mean())
    return result
