"""Bridge between ppl_gen's GaussianMixture and scikit-learn's mixtures, for the tests.

:func:`to_sklearn_init` starts ``sklearn.mixture.GaussianMixture`` from exactly the
parameters ``GaussianMixture.em(x, init=False)`` starts from; :func:`set_from_sklearn`
copies a fitted scikit-learn mixture into the model.  (``benchmarks/gmm_vs_sklearn.py``
carries its own copy of :func:`to_sklearn_init`.)
"""

from __future__ import annotations

import torch

from ppl_gen.core.errors import require
from ppl_gen.models import GaussianMixture
from ppl_gen.models.gmm_features import chol_inverse, cholesky


@torch.no_grad()
def to_sklearn_init(model: GaussianMixture) -> dict:
    """The model's parameters as ``sklearn.mixture.GaussianMixture`` init arguments.

    Returns:
        ``{"weights_init", "means_init", "precisions_init"}`` as float64 numpy arrays
        (precisions ``(K, D, D)`` for full, ``(K, D)`` for diag).
    """
    log_w, mu, cov = model._params64()
    prec = 1.0 / cov if model.covariance == "diag" else chol_inverse(cholesky(cov, "covariance"))
    return {
        "weights_init": log_w.exp().cpu().numpy(),
        "means_init": mu.cpu().numpy(),
        "precisions_init": prec.cpu().numpy(),
    }


@torch.no_grad()
def set_from_sklearn(model: GaussianMixture, gm) -> None:
    """Copy ``weights_``, ``means_`` and ``covariances_`` of a fitted scikit-learn mixture.

    Args:
        model: the mixture to overwrite (in place).
        gm: a fitted ``GaussianMixture`` or ``BayesianGaussianMixture`` with
            ``covariance_type`` equal to ``model.covariance``.

    Raises:
        PplGenError: if the covariance types or shapes differ.
    """
    ctype = getattr(gm, "covariance_type", None)
    require(
        ctype == model.covariance,
        f"set_from_sklearn: covariance_type {ctype!r} differs from {model.covariance!r}",
    )
    means = torch.as_tensor(gm.means_, dtype=torch.float64)
    require(
        tuple(means.shape) == (model.n_components, model.data_dim),
        f"set_from_sklearn: means_ has shape {tuple(means.shape)}, expected "
        f"{(model.n_components, model.data_dim)}",
    )
    weights = torch.as_tensor(gm.weights_, dtype=torch.float64)
    cov = torch.as_tensor(gm.covariances_, dtype=torch.float64)
    dev = model.logits.device
    model._store(torch.log(weights / weights.sum()).to(dev), means.to(dev), cov.to(dev))
