"""Latent-space tools for any encoder/decoder pair: interpolation (linear, slerp), 2-D
grids, attribute vectors, the 2-D manifold, latent scatter and t-SNE, reconstructions."""

from ppl_gen.latent.attributes import (
    apply_attribute,
    attribute_mask,
    attribute_vector,
    stroke_thickness,
)
from ppl_gen.latent.embedding import project_2d, tsne
from ppl_gen.latent.interpolate import corner_grid, interpolate, lerp, slerp
from ppl_gen.latent.manifold import manifold, manifold_latents
from ppl_gen.latent.pairs import EncoderDecoder, check_latent, load_pair, register_pair_loader
from ppl_gen.latent.reconstruction import denoise, reconstruct

__all__ = [
    "EncoderDecoder",
    "apply_attribute",
    "attribute_mask",
    "attribute_vector",
    "check_latent",
    "corner_grid",
    "denoise",
    "interpolate",
    "lerp",
    "load_pair",
    "manifold",
    "manifold_latents",
    "project_2d",
    "reconstruct",
    "register_pair_loader",
    "slerp",
    "stroke_thickness",
    "tsne",
]
