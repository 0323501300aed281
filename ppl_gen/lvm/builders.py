"""Build the shipped models and guides by name, from JSON-able specs.

Checkpoints written by the CLI store such a spec, so ``ppl-gen evaluate CHECKPOINT`` can
rebuild exactly the networks it saved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from torch import nn

from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.guides import AmortisedGaussianGuide, MeanFieldGuide
from ppl_gen.lvm.likelihoods import LIKELIHOODS
from ppl_gen.models import VAE, ConvVAE

MODELS = ("vae", "conv-vae")
TRACTABLE_MODELS = ("gmm", "ppca", "fa")
COMPARE_MODELS = MODELS + TRACTABLE_MODELS
GUIDES = ("amortised", "mean-field")
COVARIANCES = ("full", "diag")


@dataclass
class ModelSpec:
    """What is needed to rebuild a shipped model.

    Attributes:
        model: ``vae`` (MLP, Kingma & Welling 2014), ``conv-vae`` (28x28 images), ``gmm``
            (Gaussian mixture), ``ppca`` (Tipping & Bishop 1999) or ``fa`` (factor
            analysis).
        data_dim: ``D``.
        latent_dim: ``Z``.
        hidden: MLP hidden widths (decoder; the amortised guide mirrors them).
        likelihood: family name (see :mod:`ppl_gen.lvm.likelihoods`).
        image_shape: display shape of a datapoint.
        components, covariance: the GMM's number of components and covariance type.
    """

    model: str = "vae"
    data_dim: int = 784
    latent_dim: int = 20
    hidden: Sequence[int] = (400,)
    likelihood: str = "bernoulli"
    image_shape: Sequence[int] = (28, 28)
    components: int = 10
    covariance: str = "full"

    def validate_options(self) -> None:
        """Check the options that do not depend on the data.

        Raises:
            PplGenError: naming the first bad option.
        """
        if self.model not in COMPARE_MODELS:
            raise PplGenError(
                f"model must be one of {', '.join(COMPARE_MODELS)}, got {self.model!r}"
            )
        require_positive_int("components", self.components)
        if self.covariance not in COVARIANCES:
            raise PplGenError(
                f"covariance must be one of {', '.join(COVARIANCES)}, got {self.covariance!r}"
            )
        require_positive_int("latent_dim", self.latent_dim)
        for width in self.hidden:
            require_positive_int("hidden", width)
        if self.likelihood not in LIKELIHOODS:
            raise PplGenError(
                f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {self.likelihood!r}"
            )

    def validate(self) -> None:
        """Raise :class:`PplGenError` naming the first bad field (data shape included)."""
        self.validate_options()
        if self.model in ("ppca", "fa") and self.latent_dim >= self.data_dim:
            raise PplGenError(
                f"latent_dim must be below the data dimension {self.data_dim} for "
                f"{self.model}, got {self.latent_dim}"
            )
        if self.model == "conv-vae" and self.data_dim != 784:
            raise PplGenError(
                f"model conv-vae needs 28x28 images (784 values), the data have {self.data_dim}"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"], d["image_shape"] = list(self.hidden), list(self.image_shape)
        return d


def build_model(spec: ModelSpec) -> nn.Module:
    """Instantiate the model described by ``spec`` (validated first)."""
    spec.validate()
    if spec.model in TRACTABLE_MODELS:
        from ppl_gen.models import PPCA, FactorAnalysis, GaussianMixture

        if spec.model == "gmm":
            model = GaussianMixture(spec.data_dim, spec.components, spec.covariance)
        else:
            cls = PPCA if spec.model == "ppca" else FactorAnalysis
            model = cls(spec.data_dim, spec.latent_dim)
        model.image_shape = tuple(spec.image_shape)
        return model
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
    raise PplGenError(f"guide must be one of {', '.join(GUIDES)}, got {name!r}")
