"""CycleGAN evaluation on MNIST <-> MNIST-M (the small-scale analogue of the FCN score of
Zhu et al. 2017, sec. 5.1.1: does a translation keep what the image shows?).

* **label preservation** -- accuracy of the MNIST classifier on MNIST-M test images
  translated to MNIST; the baseline is the same classifier on the raw MNIST-M images
  (source-only accuracy).
* **cycle reconstruction error** -- mean absolute pixel error ``|F(G(x)) - x|`` on the [0, 1]
  scale, per direction.
"""

from __future__ import annotations

import torch
from torch import nn

from ppl_gen.gan.cycle_trainer import translate
from ppl_gen.metrics.generative import predict_classes


@torch.no_grad()
def evaluate_cyclegan(
    nets: dict[str, nn.Module],
    classifier: nn.Module,
    x_a: torch.Tensor,
    x_b: torch.Tensor,
    y_b: torch.Tensor | None = None,
    y_a: torch.Tensor | None = None,
) -> dict:
    """Metrics of trained CycleGAN networks on test images of both domains.

    Args:
        nets: ``G_AB``, ``G_BA`` (and discriminators, unused).
        classifier: the MNIST LeNet (scores grey or colour 28x28 images).
        x_a: ``(N_A, C_A, S, S)`` domain-A test images in [0, 1] (MNIST).
        x_b: ``(N_B, C_B, S, S)`` domain-B test images in [0, 1] (MNIST-M).
        y_b: ``(N_B,)`` labels of ``x_b``: enables label preservation of B → A.
        y_a: ``(N_A,)`` labels of ``x_a``: adds the classifier's accuracy on A → B
            translations (MNIST rendered as MNIST-M).

    Returns:
        ``cycle_l1_a`` (``|G_BA(G_AB(a)) - a|``), ``cycle_l1_b``, and with labels
        ``label_preservation_b_to_a``, ``baseline_accuracy_b`` (raw B images),
        ``accuracy_a`` (raw A images), ``label_preservation_a_to_b``.
    """
    fake_b = translate(nets["G_AB"], x_a)
    fake_a = translate(nets["G_BA"], x_b)
    result = {
        "n_a": int(x_a.shape[0]),
        "n_b": int(x_b.shape[0]),
        "cycle_l1_a": float((translate(nets["G_BA"], fake_b) - x_a).abs().mean()),
        "cycle_l1_b": float((translate(nets["G_AB"], fake_a) - x_b).abs().mean()),
    }

    def acc(x: torch.Tensor, y: torch.Tensor) -> float:
        return float((predict_classes(classifier, x) == y.cpu()).float().mean())

    if y_b is not None:
        result["label_preservation_b_to_a"] = acc(fake_a, y_b)
        result["baseline_accuracy_b"] = acc(x_b, y_b)
    if y_a is not None:
        result["accuracy_a"] = acc(x_a, y_a)
        result["label_preservation_a_to_b"] = acc(fake_b, y_a)
    return result
