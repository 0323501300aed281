"""2-D views of codes: the scatter of a 2-D latent space (or of the first two principal
components of a larger one) and t-SNE (van der Maaten & Hinton 2008) via
:class:`sklearn.manifold.TSNE`, coloured by label."""

from __future__ import annotations

import math

import numpy as np
import torch

from ppl_gen.core.errors import PplGenError


def project_2d(z: torch.Tensor) -> tuple[np.ndarray, str]:
    """``(N, Z)`` codes -> ``(N, 2)`` coordinates and a description: the codes themselves
    when ``Z = 2`` (``Z = 1`` gets a zero second axis), else their first two principal
    components (scikit-learn ``PCA``).

    Raises:
        PplGenError: fewer than 2 points.
    """
    z = np.asarray(torch.as_tensor(z).detach().cpu().double())
    if z.ndim != 2 or z.shape[0] < 2:
        raise PplGenError(f"latent scatter needs at least 2 points (N, Z), got {z.shape}")
    if z.shape[1] == 2:
        return z, "latent coordinates"
    if z.shape[1] == 1:
        return np.concatenate([z, np.zeros_like(z)], axis=1), "latent coordinate"
    from sklearn.decomposition import PCA

    return PCA(2).fit_transform(z), "first two principal components of the codes"


def tsne(
    z: torch.Tensor, perplexity: float = 30.0, seed: int = 0, max_iter: int = 1000
) -> np.ndarray:
    """t-SNE embedding of codes.

    Args:
        z: ``(N, Z)`` codes.
        perplexity: effective number of neighbours (scikit-learn requires it below ``N``).
        seed: ``random_state`` of the optimisation.
        max_iter: gradient iterations (scikit-learn's minimum is 250).

    Returns:
        ``(N, 2)`` float64 coordinates.

    Raises:
        PplGenError: naming ``perplexity`` if it is not positive or not below the number
            of points (``n_points``).
    """
    from sklearn.manifold import TSNE

    z = np.asarray(torch.as_tensor(z).detach().cpu().double())
    n = z.shape[0] if z.ndim == 2 else 0
    if not (isinstance(perplexity, (int, float)) and math.isfinite(perplexity) and perplexity > 0):
        raise PplGenError(f"perplexity must be a positive number, got {perplexity!r}")
    if n <= perplexity:
        raise PplGenError(
            f"perplexity {perplexity:g} needs more than {perplexity:g} points, got {n} "
            "(raise n_points or lower perplexity)"
        )
    model = TSNE(
        2, perplexity=perplexity, init="pca", random_state=seed, max_iter=max(250, max_iter)
    )
    return model.fit_transform(z)
