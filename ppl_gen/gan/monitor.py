"""Warnings for the two classic GAN failures, checked once per epoch.

* **Discriminator collapse**: the discriminator's mean loss over an epoch falls to ~0 (it
  separates real from fake perfectly), so the generator's gradient vanishes or becomes
  uninformative (Arjovsky & Bottou 2017).  Checked for ``vanilla`` and ``lsgan``, whose
  losses are non-negative; a WGAN critic's loss has no floor.
* **Mode collapse**: the generator maps many ``z`` to few outputs (Goodfellow 2016,
  sec. 5.1.1).  Measured by the mean pairwise L2 distance between samples from a fixed batch
  of noise, relative to the same statistic on real images: a ratio below
  ``diversity_ratio`` warns.  (With the MNIST classifier, ``ppl-gen evaluate`` adds the
  predicted-class histogram: :func:`ppl_gen.metrics.generative.mode_coverage`.)

Warnings are :class:`GANTrainingWarning` (a ``UserWarning``) emitted with
:func:`warnings.warn`, so they can be filtered or turned into errors.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch


class GANTrainingWarning(UserWarning):
    """A GAN training pathology was detected (discriminator or mode collapse)."""


def mean_pairwise_distance(x: torch.Tensor) -> float:
    """Mean L2 distance between distinct rows of ``x: (B, ...)`` (B >= 2), in pixel units."""
    flat = x.detach().flatten(1).float()
    d = torch.cdist(flat, flat)
    b = flat.shape[0]
    return float(d.sum() / (b * (b - 1)))


@dataclass
class CollapseMonitor:
    """Checks an epoch's discriminator loss and a batch of samples.

    Attributes:
        loss_mode: ``vanilla``, ``lsgan`` or ``wgan-gp``.
        d_loss_floor: mean discriminator loss below which the discriminator is said to have
            collapsed (vanilla: BCE summed over the real and fake terms, in nats).
        diversity_ratio: sample diversity / real diversity below which mode collapse is
            reported.
        real_diversity: :func:`mean_pairwise_distance` of a batch of real images (set by
            the trainer).
        grace_epochs: a freshly initialised generator outputs nearly constant images, so a
            low ratio is only reported once it has fallen below half its best value so far,
            or after ``grace_epochs`` epochs.
    """

    loss_mode: str = "vanilla"
    d_loss_floor: float = 1e-3
    diversity_ratio: float = 0.2
    real_diversity: float | None = None
    grace_epochs: int = 5
    best_ratio: float = 0.0

    def state_dict(self) -> dict[str, float]:
        """The running best diversity ratio (stored in checkpoints, so a resumed run warns
        as the uninterrupted one)."""
        return {"best_ratio": float(self.best_ratio)}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore :meth:`state_dict`."""
        self.best_ratio = float(state["best_ratio"])

    def check(self, epoch: int, d_loss: float, samples: torch.Tensor | None = None) -> list[str]:
        """Warn (and return the messages) about collapse seen at the end of ``epoch``.

        Args:
            epoch: 1-based epoch number (for the message).
            d_loss: the epoch's mean discriminator loss.
            samples: ``(B, C, H, W)`` generator outputs for a fixed noise batch, B >= 2.
        """
        messages = []
        if self.loss_mode != "wgan-gp" and d_loss < self.d_loss_floor:
            messages.append(
                f"epoch {epoch}: discriminator loss collapsed to {d_loss:.2e} (< "
                f"{self.d_loss_floor:g}): D separates real from fake perfectly and the "
                "generator's gradient vanishes; lower D's learning rate or try loss lsgan / "
                "wgan-gp"
            )
        if samples is not None and self.real_diversity and samples.shape[0] >= 2:
            ratio = mean_pairwise_distance(samples) / self.real_diversity
            self.best_ratio = max(self.best_ratio, ratio)
            fell = ratio < 0.5 * self.best_ratio or epoch >= self.grace_epochs
            if ratio < self.diversity_ratio and fell:
                messages.append(
                    f"epoch {epoch}: possible mode collapse: samples are {ratio:.2f}x as "
                    f"diverse as real images (mean pairwise distance; warning below "
                    f"{self.diversity_ratio:g})"
                )
        for m in messages:
            warnings.warn(m, GANTrainingWarning, stacklevel=2)
        return messages
