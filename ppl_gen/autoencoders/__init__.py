"""Deterministic autoencoders (plain, denoising, sparse, contractive; MLP and
convolutional) as PyTorch modules on the shared device layer, their trainer, and the
autoencoder-as-generator (a full-covariance Gaussian fitted to the training latents)."""

from ppl_gen.autoencoders.base import Autoencoder
from ppl_gen.autoencoders.build import (
    ARCHS,
    build_autoencoder,
    load_autoencoder,
    make_autoencoder,
)
from ppl_gen.autoencoders.conv import ConvAutoencoder
from ppl_gen.autoencoders.evaluation import reconstruction_errors, squared_errors
from ppl_gen.autoencoders.full_batch import fit_full_batch, principal_angles_degrees
from ppl_gen.autoencoders.generator import LatentGaussian, fit_latent_gaussian, sample_decoded
from ppl_gen.autoencoders.mlp import MLPAutoencoder
from ppl_gen.autoencoders.noise import NOISES, corrupt
from ppl_gen.autoencoders.penalties import (
    contractive_penalty,
    encoder_jacobian,
    mlp_contractive_penalty,
    sparsity_penalty,
)
from ppl_gen.autoencoders.trainer import (
    VARIANTS,
    AutoencoderTrainConfig,
    AutoencoderTrainResult,
    autoencoder_loss,
    train_autoencoder,
    variant_config,
)

__all__ = [
    "ARCHS",
    "NOISES",
    "VARIANTS",
    "Autoencoder",
    "AutoencoderTrainConfig",
    "AutoencoderTrainResult",
    "ConvAutoencoder",
    "LatentGaussian",
    "MLPAutoencoder",
    "autoencoder_loss",
    "build_autoencoder",
    "contractive_penalty",
    "corrupt",
    "encoder_jacobian",
    "fit_full_batch",
    "fit_latent_gaussian",
    "load_autoencoder",
    "make_autoencoder",
    "mlp_contractive_penalty",
    "principal_angles_degrees",
    "reconstruction_errors",
    "sample_decoded",
    "sparsity_penalty",
    "squared_errors",
    "train_autoencoder",
    "variant_config",
]
