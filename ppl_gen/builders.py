"""Build the shipped models and guides by name, from JSON-able specs.

Checkpoints written by the CLI store such a spec, so ``ppl-gen evaluate CHECKPOINT`` can
rebuild exactly the networks it saved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from torch import nn

from ppl_gen.errors import PplGenError, require_positive_int
from ppl_gen.guides import AmortisedGaussianGuide, MeanFieldGuide
from ppl_gen.likelihoods import LIKELIHOODS
from ppl_gen.models import VAE, ConvVAE

MODELS = ("vae", "conv-vae")
GUIDES = ("amortised", "mean-field")


@dataclass
class ModelSpec:
    """What is needed to rebuild a shipped model.

    Attributes:
        model: ``vae`` (MLP, Kingma & Welling 2014) or ``conv-vae`` (28x28 images).
        data_dim: ``D``.
        latent_dim: ``Z``.
        hidden: MLP hidden widths (decoder; the amortised guide mirrors them).
        likelihood: family name (see :mod:`ppl_gen.likelihoods`).
        image_shape: display shape of a datapoint.
    """

    model: str = "vae"
    data_dim: int = 784
    latent_dim: int = 20
    hidden: Sequence[int] = (400,)
    likelihood: str = "bernoulli"
    image_shape: Sequence[int] = (28, 28)

    def validate(self) -> None:
        """Raise :class:`PplGenError` naming the first bad field."""
        if self.model not in MODELS:
            raise PplGenError(f"--model must be one of {', '.join(MODELS)}, got {self.model!r}")
        require_positive_int("--latent-dim", self.latent_dim)
        for width in self.hidden:
            require_positive_int("--hidden", width)
        if self.likelihood not in LIKELIHOODS:
            raise PplGenError(
                f"--likelihood must be one of {', '.join(LIKELIHOODS)}, got {self.likelihood!r}"
            )
        if self.model == "conv-vae" and self.data_dim != 784:
            raise PplGenError(
                f"--model conv-vae needs 28x28 images (784 values), the data have {self.data_dim}"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"], d["image_shape"] = list(self.hidden), list(self.image_shape)
        return d


def build_model(spec: ModelSpec) -> nn.Module:
    """Instantiate the model described by ``spec`` (validated first)."""
    spec.validate()
    if spec.model == "conv-vae":
        return ConvVAE(spec.latent_dim, spec.likelihood)
    return VAE(spec.data_dim, spec.latent_dim, spec.hidden, spec.likelihood, spec.image_shape)


def build_guide(name: str, model: nn.Module, num_data: int, hidden: Sequence[int]) -> nn.Module:
    """``amortised`` (encoder ``q(z|x)``) or ``mean-field`` (per-datapoint ``q^(i)``) guide.

    Raises:
        PplGenError: for an unknown guide name.
    """
    if name == "amortised":
        return AmortisedGaussianGuide(model, tuple(hidden))
    if name == "mean-field":
        return MeanFieldGuide(model, num_data)
    raise PplGenError(f"--guide must be one of {', '.join(GUIDES)}, got {name!r}")
