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

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ppl_gen.core.errors import PplGenError
from ppl_gen.core.io import save_with

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


def plot_tsne(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | os.PathLike,
    domain_names: tuple[str, str] = ("source", "target"),
) -> Path:
    """Draw t-SNE maps side by side (one per entry of ``panels``, e.g. ``"before
    adaptation"`` / ``"after adaptation"``), points coloured by domain; written atomically.

    Args:
        panels: title → ``(points (n, 2), domain (n,))`` from :func:`tsne_embedding`.
        path: output image (``.png``).
        domain_names: legend names of domain 0 and 1.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5 * len(panels), 4.5))
    for i, (title, (points, domain)) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for d, colour in ((0, "tab:blue"), (1, "tab:red")):
            sel = domain == d
            ax.scatter(
                points[sel, 0], points[sel, 1], s=3, c=colour, alpha=0.5, label=domain_names[d]
            )
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(loc="upper right", markerscale=4, fontsize=8)
    fig.tight_layout()
    return save_with(path, lambda tmp: fig.savefig(tmp, dpi=110))


def plot_history(histories: Mapping[str, Mapping[str, Sequence]], path: str | os.PathLike) -> Path:
    """Per-epoch training curves of DANN runs: label loss (nats per source image), domain
    loss (nats per image) and domain-classifier accuracy, one line per run; written
    atomically.

    Args:
        histories: run name → :attr:`DANNResult.history` (``None`` entries are skipped).
        path: output image (``.png``).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13.5, 4.0))
    panels = (
        ("label_loss", "label loss (nats)"),
        ("domain_loss", "domain loss (nats)"),
        ("domain_accuracy", "domain classifier accuracy"),
    )
    for i, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        for name, history in histories.items():
            pairs = [
                (e, v) for e, v in zip(history["epoch"], history[key], strict=True) if v is not None
            ]
            if pairs:
                ax.plot(*zip(*pairs, strict=True), marker=".", label=name)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        if key == "domain_accuracy":
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_with(path, lambda tmp: fig.savefig(tmp, dpi=100))


def adaptation_report(
    before,
    after,
    source,
    target,
    *,
    n_points: int = 2000,
    seed: int = 0,
    tsne_path: str | os.PathLike | None = None,
) -> dict[str, float]:
    """Proxy A-distance between source and target test features of two networks (the
    source-only one ``before`` adaptation and DANN ``after`` it), and optionally the t-SNE
    figure of both (Ganin et al. 2016, fig. 4).

    Args:
        before, after: trained :class:`ppl_gen.adaptation.dann.DANN` networks.
        source, target: :class:`ppl_gen.adaptation.dann_trainer.DomainData`; ``n_points``
            test images of each (a seeded random subset) are used.
        n_points: images per domain (at most 1,000 of them go into t-SNE).
        seed: seeds the subsets, the classifier split and t-SNE.
        tsne_path: where to draw the t-SNE figure (``None``: no figure).

    Returns:
        ``proxy_a_distance_before`` / ``_after`` and ``proxy_a_error_before`` / ``_after``.
    """
    from ppl_gen.adaptation.dann_trainer import extract_features

    def subset(x: torch.Tensor, s: int) -> torch.Tensor:
        idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(s))
        return x[idx[:n_points]]

    xs, xt = subset(source.x_test, seed), subset(target.x_test, seed + 1)
    out: dict[str, float] = {}
    feats = {}
    for label, model in (("before", before), ("after", after)):
        fs, ft = extract_features(model, xs), extract_features(model, xt)
        feats[label] = (fs, ft)
        pad = proxy_a_distance(fs, ft, seed=seed)
        out[f"proxy_a_distance_{label}"] = pad.distance
        out[f"proxy_a_error_{label}"] = pad.error
    if tsne_path is not None:
        k = min(n_points, 1000)
        titles = {"before": "before adaptation (source only)", "after": "after adaptation (DANN)"}
        panels = {
            titles[label]: tsne_embedding(fs[:k], ft[:k], seed=seed)
            for label, (fs, ft) in feats.items()
        }
        plot_tsne(panels, tsne_path, (source.name, target.name))
    return out
