"""A small LeNet-style MNIST classifier: the project's own judge of generated digits.

Sample-quality metrics for generators (FD-LeNet, classifier Inception score, label agreement,
mode coverage) and the CVAE's class-agreement check need a classifier and its features.
Inception weights cannot be downloaded here, so the project trains its own on MNIST
(``ppl-gen train classifier --data-root DIR``, about a minute on 2 CPU cores) and caches it
at :func:`default_classifier_path`.  Numbers computed with it are *not* comparable to
Inception-based FID/IS from the literature; they compare models within this project.

Architecture (LeNet-5 style, LeCun et al. 1998, widened): conv5x5-32 (padding 2), ReLU,
max-pool 2; conv5x5-64, ReLU, max-pool 2; FC 1600→128, ReLU (the *features*, 128-D); FC
128→10 (logits).  Colour inputs ``(B, 3, 28, 28)`` (e.g. MNIST-M) are converted to grey by
the channel mean, so the same classifier scores translations and raw MNIST-M images.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ppl_gen.core.checkpoint import load_checkpoint, save_checkpoint
from ppl_gen.core.device import module_device, resolve_device
from ppl_gen.core.errors import PplGenError, require, require_positive_int

KIND = "classifier"
FEATURE_DIM = 128


def default_classifier_path() -> Path:
    """``runs/classifier/lenet_mnist.pt`` relative to the working directory (where
    ``ppl-gen train classifier`` writes by default)."""
    return Path("runs") / "classifier" / "lenet_mnist.pt"


def to_classifier_input(x: torch.Tensor) -> torch.Tensor:
    """Bring images to the classifier's input layout ``(B, 1, 28, 28)``.

    Args:
        x: ``(B, 784)``, ``(B, 1, 28, 28)`` or ``(B, 3, 28, 28)`` (colour: channel mean),
            values in [0, 1].

    Raises:
        PplGenError: naming ``x`` for any other shape.
    """
    if x.dim() == 2 and x.shape[1] == 784:
        return x.reshape(-1, 1, 28, 28)
    if x.dim() == 4 and x.shape[2:] == (28, 28) and x.shape[1] in (1, 3):
        return x if x.shape[1] == 1 else x.mean(dim=1, keepdim=True)
    raise PplGenError(
        "x: the MNIST classifier takes (B, 784), (B, 1, 28, 28) or (B, 3, 28, 28) images, "
        f"got shape {tuple(x.shape)}"
    )


class LeNet(nn.Module):
    """LeNet-style MNIST classifier (see the module docstring for the layers).

    ``forward(x)`` → logits ``(B, 10)``; ``features(x)`` → penultimate activations
    ``(B, 128)``; ``x`` as accepted by :func:`to_classifier_input`.
    """

    feature_dim = FEATURE_DIM
    num_classes = 10

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5)
        self.fc1 = nn.Linear(64 * 5 * 5, FEATURE_DIM)
        self.fc2 = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, 128)`` of images ``x`` in [0, 1]."""
        h = to_classifier_input(x)
        h = F.max_pool2d(F.relu(self.conv1(h)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, 10)`` of images ``x`` in [0, 1]."""
        return self.fc2(self.features(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Predicted classes ``(B,)`` (int64), computed in chunks of ``batch_size``."""
        return torch.cat(
            [self(x[i : i + batch_size]).argmax(-1) for i in range(0, x.shape[0], batch_size)]
        )


@dataclass
class ClassifierConfig:
    """Settings of :func:`train_classifier` (Adam, cross-entropy)."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def validate(self) -> None:
        """Raise :class:`PplGenError` naming the first bad setting."""
        require_positive_int("epochs", self.epochs)
        require_positive_int("batch_size", self.batch_size)
        require(self.lr > 0, f"lr must be positive, got {self.lr!r}")


@torch.no_grad()
def accuracy(classifier: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` (images as in :func:`to_classifier_input`) classified as ``y: (B,)``."""
    require(x.shape[0] == y.shape[0], "x and y must have the same number of rows")
    require(x.shape[0] > 0, "x: no images to classify")
    device = module_device(classifier)
    was_training = classifier.training
    classifier.eval()
    pred = classifier.predict(x.to(device))
    classifier.train(was_training)
    return float((pred.cpu() == y.cpu()).float().mean())


def train_classifier(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    config: ClassifierConfig | None = None,
    *,
    test_x: torch.Tensor | None = None,
    test_y: torch.Tensor | None = None,
) -> tuple[LeNet, dict]:
    """Train a :class:`LeNet` on ``train_x: (N, 784)`` images in [0, 1] with labels
    ``train_y: (N,)`` (int64 in 0..9).

    Returns:
        the trained classifier (eval mode) and a dict with ``train_seconds`` (seconds),
        ``epochs``, ``train_accuracy`` and, if test data are given, ``test_accuracy``.

    Raises:
        PplGenError: bad settings, mismatched rows or labels outside 0..9.
    """
    config = config or ClassifierConfig()
    config.validate()
    require(train_x.shape[0] == train_y.shape[0], "train_x and train_y must have equal rows")
    require(train_x.shape[0] > 0, "train_x: no training images")
    require(
        int(train_y.min()) >= 0 and int(train_y.max()) <= 9,
        "train_y: labels must be digit classes 0..9",
    )
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    net = LeNet().to(device)
    x = to_classifier_input(train_x).to(device)
    y = train_y.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    t0 = time.perf_counter()
    for epoch in range(config.epochs):
        order = torch.randperm(x.shape[0], generator=generator).to(device)
        batches = order.split(config.batch_size)
        bar = tqdm(
            batches,
            desc=f"classifier epoch {epoch + 1}/{config.epochs}",
            disable=True if not config.progress else None,
            leave=False,
        )
        for idx in bar:
            loss = F.cross_entropy(net(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    net.eval()
    metrics = {
        "epochs": config.epochs,
        "train_seconds": time.perf_counter() - t0,
        "train_accuracy": accuracy(net, train_x, train_y),
    }
    if test_x is not None and test_y is not None:
        metrics["test_accuracy"] = accuracy(net, test_x, test_y)
    return net, metrics


def save_classifier(
    path: str | os.PathLike, classifier: LeNet, metrics: dict, config: ClassifierConfig
) -> Path:
    """Write the classifier checkpoint atomically (``kind = "classifier"``)."""
    return save_checkpoint(
        path,
        {
            "kind": KIND,
            "model": classifier.state_dict(),
            "metrics": metrics,
            "config": asdict(config),
        },
    )


def load_classifier(
    path: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> LeNet:
    """Load a classifier written by ``ppl-gen train classifier`` (eval mode, on ``device``).

    Args:
        path: the checkpoint; ``None`` means :func:`default_classifier_path`.

    Raises:
        PplGenError: naming ``--classifier`` if the file is missing (with the command that
            produces it) or is not a classifier checkpoint.
    """
    path = Path(path) if path is not None else default_classifier_path()
    if not path.is_file():
        raise PplGenError(
            f"classifier: no MNIST classifier at {str(path)!r}; train one with "
            f"`ppl-gen train classifier data_root DIR out {path.parent}`"
        )
    state = load_checkpoint(path)
    if state.get("kind") != KIND:
        raise PplGenError(
            f"classifier: {str(path)!r} is a {state.get('kind', 'latent-variable')!r} "
            "checkpoint, not an MNIST classifier"
        )
    net = LeNet()
    net.load_state_dict(state["model"])
    return net.to(resolve_device(device)).eval()
