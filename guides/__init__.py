"""Pyro guide functions (approximate posteriors ``q``), installed as ``ppl_gen.guides``."""

from ppl_gen.guides.conditional_encoder import ConditionalEncoderGuide
from ppl_gen.guides.encoder import AmortisedGaussianGuide
from ppl_gen.guides.factory import GUIDE_FAMILIES, make_guide
from ppl_gen.guides.flow import AmortisedIAFGuide
from ppl_gen.guides.full_rank import AmortisedFullRankGuide, LocalFullRankGuide
from ppl_gen.guides.mean_field import MeanFieldGuide
from ppl_gen.guides.sites import (
    LatentSite,
    SitesTransform,
    latent_sites,
    local_latent_shapes,
    site_distribution,
)
from ppl_gen.guides.structured import StructuredAmortisedGuide

GUIDES = ("amortised", "mean-field")

__all__ = [
    "GUIDES",
    "GUIDE_FAMILIES",
    "AmortisedFullRankGuide",
    "AmortisedGaussianGuide",
    "AmortisedIAFGuide",
    "ConditionalEncoderGuide",
    "LatentSite",
    "LocalFullRankGuide",
    "MeanFieldGuide",
    "SitesTransform",
    "StructuredAmortisedGuide",
    "latent_sites",
    "local_latent_shapes",
    "make_guide",
    "site_distribution",
]
