"""Pyro guide functions (approximate posteriors ``q``), installed as ``ppl_gen.guides``."""

from ppl_gen.guides.conditional_encoder import ConditionalEncoderGuide
from ppl_gen.guides.encoder import AmortisedGaussianGuide
from ppl_gen.guides.mean_field import MeanFieldGuide

GUIDES = ("amortised", "mean-field")

__all__ = ["AmortisedGaussianGuide", "ConditionalEncoderGuide", "MeanFieldGuide", "GUIDES"]
