"""Paired image-to-image translation metrics (pix2pix, and CycleGAN scored on the same
pairs): how close a translation is to the paired ground truth, and whether it keeps what
the image shows.

* **per-pixel L1** -- ``mean |G(x) - y|`` over pixels and channels of the test pairs, on
  the [0, 1] scale (Isola et al. 2017 report per-pixel errors of this kind for their
  paired tasks).  For MNIST -> MNIST-M the background of ``y`` is a random photograph crop
  that the input does not determine, so part of this error is irreducible.
* **label preservation** -- accuracy of the MNIST judge (:mod:`ppl_gen.metrics.classifier`,
  which reads colour images by their channel mean, as :mod:`ppl_gen.metrics.cycle` does) on
  the translations, against the digit label of the pair; beside it the judge's accuracy on
  the raw sources and on the real targets.
"""

from __future__ import annotations

import torch
from torch import nn

from ppl_gen.core.errors import require
from ppl_gen.gan.cycle_trainer import translate
from ppl_gen.metrics.generative import predict_classes


@torch.no_grad()
def evaluate_translation(
    generator: nn.Module,
    source: torch.Tensor,
    target: torch.Tensor,
    labels: torch.Tensor | None = None,
    classifier: nn.Module | None = None,
) -> dict:
    """Score ``generator: source -> target`` on aligned test pairs.

    Args:
        generator: maps [-1, 1] images to [-1, 1] (a pix2pix U-Net or a CycleGAN generator).
        source: ``(N, C_s, 28, 28)`` test inputs in [0, 1].
        target: ``(N, C_t, 28, 28)`` their paired ground truth in [0, 1].
        labels: ``(N,)`` digit labels of the pairs (with ``classifier``: label preservation).
        classifier: the MNIST judge.

    Returns:
        ``n_test``, ``l1`` (mean absolute error, [0, 1] scale) and with labels and classifier
        ``label_preservation``, ``source_accuracy``, ``target_accuracy`` (fractions).

    Raises:
        PplGenError: naming ``target`` when the pairs do not align or the translation's
            shape differs from the targets'.
    """
    require(source.shape[0] == target.shape[0], "target: source and target must be aligned pairs")
    fake = translate(generator, source)
    require(
        fake.shape == target.shape,
        f"target: translations {tuple(fake.shape)} vs targets {tuple(target.shape)}",
    )
    result = {"n_test": int(source.shape[0]), "l1": float((fake - target).abs().mean())}
    if labels is not None and classifier is not None:
        y = labels.cpu()

        def acc(x: torch.Tensor) -> float:
            return float((predict_classes(classifier, x) == y).float().mean())

        result.update(
            label_preservation=acc(fake), source_accuracy=acc(source), target_accuracy=acc(target)
        )
    return result
