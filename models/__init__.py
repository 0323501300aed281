"""Pyro model functions (generative models ``p(x, z)``), installed as ``ppl_gen.models``."""

from ppl_gen.models.conv_vae import ConvVAE
from ppl_gen.models.cvae import CVAE
from ppl_gen.models.factor_analysis import FactorAnalysis
from ppl_gen.models.gmm import GaussianMixture
from ppl_gen.models.ppca import PPCA
from ppl_gen.models.vae import VAE

__all__ = ["VAE", "ConvVAE", "CVAE", "PPCA", "FactorAnalysis", "GaussianMixture"]
