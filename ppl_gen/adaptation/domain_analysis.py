"""How far apart two domains are in a representation: the proxy A-distance and t-SNE maps.

* Proxy A-distance (Ben-David et al. 2007; Ganin et al. JMLR 2016, sec. 5.1.5):
  ``d_A = 2 (1 - 2 ε)`` where ``ε`` is the held-out error of a linear classifier trained to
  tell source features from target features.  ``d_A = 2``: perfectly separable domains;
  ``d_A ≈ 0``: indistinguishable (it can dip below 0 when the classifier is worse than
  chance on the held-out set).  The classifier is scikit-learn's ``LinearSVC`` on
  standardised features; its ``C`` is chosen on a validation part and ``ε`` measured on a
  separate test part.
* t-SNE (van der Maaten & Hinton 2008; Ganin et al. 2016, fig. 4): a 2-D embedding of
  source and target features with ``sklearn.manifold.TSNE``, points coloured by domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ppl_gen.core.errors import PplGenError

C_GRID = (0.001, 0.01, 0.1, 1.0)


@dataclass(frozen=True)
class ProxyADistance:
    """Result of :func:`proxy_a_distance`.

    Attributes:
        distance: ``d_A = 2 (1 - 2 ε)`` (dimensionless, at most 2).
        error: ``ε``, the held-out domain-classification error (fraction).
        c: the ``LinearSVC`` regularisation constant chosen on the validation part.
        n_test: number of held-out points ``ε`` was measured on.
    """

    distance: float
    error: float
    c: float
    n_test: int


def _as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64).reshape(len(x), -1)


def proxy_a_distance(
    source: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    *,
    seed: int = 0,
    c_grid: Sequence[float] = C_GRID,
    max_iter: int = 2000,
) -> ProxyADistance:
    """Proxy A-distance between two samples of features.

    The pooled points (label 0 = source, 1 = target) are shuffled with ``seed`` and split
    50 / 25 / 25 % into train / validation / test.  A ``LinearSVC`` on standardised features
    is fitted on train for each ``C`` in ``c_grid``; the ``C`` with the lowest validation
    error is refitted on train + validation, and its test error is ``ε``.

    Args:
        source: ``(n_s, D)`` (or ``(n_s, ...)``, flattened) source features.
        target: ``(n_t, D)`` target features.
        seed: seeds the shuffle.
        c_grid: candidate regularisation constants.
        max_iter: iterations of the liblinear solver.

    Returns:
        :class:`ProxyADistance`.

    Raises:
        PplGenError: fewer than 8 points in a domain, different feature sizes, or
            non-finite features.
    """
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    xs, xt = _as_numpy(source), _as_numpy(target)
    if len(xs) < 8 or len(xt) < 8:
        raise PplGenError("proxy A-distance needs at least 8 points per domain")
    if xs.shape[1] != xt.shape[1]:
        raise PplGenError(
            f"proxy A-distance: source features have {xs.shape[1]} dimensions, target {xt.shape[1]}"
        )
    x = np.concatenate([xs, xt])
    if not np.isfinite(x).all():
        raise PplGenError("proxy A-distance: features contain NaN or inf")
    y = np.concatenate([np.zeros(len(xs)), np.ones(len(xt))])
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_train, n_val = len(x) // 2, len(x) // 4
    tr, va, te = slice(0, n_train), slice(n_train, n_train + n_val), slice(n_train + n_val, None)

    def fit(c: float, rows: slice):
        clf = make_pipeline(StandardScaler(), LinearSVC(C=c, max_iter=max_iter))
        return clf.fit(x[rows], y[rows])

    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        val_err = [float(np.mean(fit(c, tr).predict(x[va]) != y[va])) for c in c_grid]
        best = c_grid[int(np.argmin(val_err))]
        clf = fit(best, slice(0, n_train + n_val))
    err = float(np.mean(clf.predict(x[te]) != y[te]))
    return ProxyADistance(
        distance=2.0 * (1.0 - 2.0 * err), error=err, c=float(best), n_test=len(y[te])
    )


def tsne_embedding(
    source: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """2-D t-SNE of the pooled features (``sklearn.manifold.TSNE``, PCA initialisation).

    Args:
        source: ``(n_s, D)`` source features; target: ``(n_t, D)`` target features.
        seed: seeds t-SNE.

    Returns:
        ``(points, domain)``: ``(n_s + n_t, 2)`` coordinates and ``(n_s + n_t,)`` labels
        (0 = source, 1 = target).
    """
    from sklearn.manifold import TSNE

    xs, xt = _as_numpy(source), _as_numpy(target)
    x = np.concatenate([xs, xt]).astype(np.float32)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    points = TSNE(2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(x)
    return points, np.concatenate([np.zeros(len(xs)), np.ones(len(xt))])
