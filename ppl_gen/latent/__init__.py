"""Latent-space tools for any encoder/decoder pair: interpolation (linear, slerp), 2-D
grids, attribute vectors, the 2-D manifold, latent scatter and t-SNE, reconstructions."""
