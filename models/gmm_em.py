"""Expectation-maximisation for the Gaussian mixture (Bishop PRML 9.2.2), k-means++ seeded.

EM alternates the E-step (responsibilities ``gamma(z_nk)``, PRML 9.23) and the closed-form
M-step (PRML 9.24-9.27); it is seeded by k-means++ (Arthur & Vassilvitskii 2007) and can
keep the best of several restarts.  Every pass over the data is vectorised through the
quadratic features of :mod:`ppl_gen.models.gmm_features` (two GEMMs per iteration) and runs
in float64.  The functions take the :class:`~ppl_gen.models.gmm.GaussianMixture` as their
first argument (``model``) and update its parameters in place; the model's methods of the
same names (``em``, ``init_from_data``, ``initial_responsibilities``) call them.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from ppl_gen.core.distributed import DistributedContext
from ppl_gen.core.errors import PplGenError, require, require_positive_int
from ppl_gen.core.threads import one_thread
from ppl_gen.lvm.tractable import FitHistory
from ppl_gen.models.gmm_features import (
    Design,
    component_coefficients,
    e_pass,
    resp_stats,
    sized,
    sym,
)
from ppl_gen.models.stopping import converged


def _sq_dist(a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor | None = None) -> torch.Tensor:
    """``(n, m)`` squared Euclidean distances between the rows of ``a`` and ``b``."""
    a_sq = (a * a).sum(-1, keepdim=True)
    b_sq = (b * b).sum(-1) if b_sq is None else b_sq
    return (a_sq + b_sq - 2.0 * (a @ b.T)).clamp_min_(0.0)


def kmeans_plusplus(
    x: torch.Tensor,
    n_clusters: int,
    generator: torch.Generator,
    n_local_trials: int | None = None,
) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007, "D^2 weighting").

    The first centre is a uniformly drawn row; every further centre is drawn with
    probability proportional to its squared distance to the nearest centre chosen so far.
    With ``n_local_trials > 1`` this is the *greedy* variant used by scikit-learn: that many
    candidates are drawn and the one that most reduces the potential
    ``sum_n min_c ||x_n - c||^2`` is kept (Arthur & Vassilvitskii 2007, sec. 6).

    Args:
        x: ``(N, D)`` rows (any float dtype; distances are computed in ``x``'s dtype).
        n_clusters: ``K <= N`` centres to pick.
        generator: a CPU ``torch.Generator`` (seeded by the caller) for every draw.
        n_local_trials: candidates per centre; default ``2 + floor(ln K)`` (scikit-learn's);
            1 gives the original algorithm.

    Returns:
        ``(K,)`` int64 row indices of the centres, on ``x``'s device.

    Raises:
        PplGenError: if ``K`` is not a positive integer or exceeds the number of rows.
    """
    require_positive_int("n_clusters", n_clusters)
    n = x.shape[0]
    require(n >= n_clusters, f"x: k-means++ needs at least {n_clusters} rows, got {n}")
    trials = 2 + int(math.log(n_clusters)) if n_local_trials is None else n_local_trials
    require_positive_int("n_local_trials", trials)
    x_sq = (x * x).sum(-1)
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [first]
    closest = _sq_dist(x[first : first + 1], x, x_sq)[0]
    potential = closest.sum()
    for _ in range(1, n_clusters):
        u = torch.rand(trials, generator=generator, dtype=torch.float64).to(x.device)
        targets = (u * potential.double()).to(closest.dtype)
        cdf = torch.cumsum(closest, 0)
        # side='right': a zero-distance row (an existing centre) is never drawn
        cand = torch.searchsorted(cdf, targets, side="right").clamp_max_(n - 1)
        dist_cand = torch.minimum(closest, _sq_dist(x[cand], x, x_sq))
        pots = dist_cand.sum(1)
        best = int(torch.argmin(pots))
        closest, potential = dist_cand[best], pots[best]
        centres.append(int(cand[best]))
    return torch.tensor(centres, dtype=torch.int64, device=x.device)


# ------------------------------------------------------------------ EM steps


@one_thread
def m_step(
    design: Design, stats: torch.Tensor, reg_covar: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Closed-form M-step (PRML 9.24-9.27) from ``stats = R^T Z`` (``(K, n_cols)``).

    Returns:
        Data-frame parameters ``(log pi (K,), mu (K, D), Sigma (K, D, D) or variances
        (K, D))``, float64, with ``reg_covar`` added to every (diagonal) variance.
    """
    nk, xbar, second = design.unpack(stats)
    log_w = torch.log(nk / design.n_total)
    if design.covariance == "diag":
        cov = (second - xbar * xbar).clamp_min_(0.0) + reg_covar
    else:
        cov = sym(second - xbar.unsqueeze(-1) * xbar.unsqueeze(-2))
        cov.diagonal(dim1=-2, dim2=-1).add_(reg_covar)
    return log_w, xbar + design.center, cov


@torch.no_grad()
@sized
def initial_responsibilities(model: nn.Module, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Hard assignments to k-means++ centres, as one-hot responsibilities.

    The centres are ``K`` rows chosen by :func:`kmeans_plusplus` (greedy variant,
    generator seeded with ``seed``); every row is assigned to its nearest centre.

    Args:
        model: the :class:`~ppl_gen.models.gmm.GaussianMixture` (gives ``K`` and ``D``).
        x: ``(N, D)`` rows, ``N >= K``.
        seed: seed of the k-means++ draws.

    Returns:
        ``(N, K)`` float64 one-hot responsibilities on ``x``'s device.

    Raises:
        PplGenError: if ``x`` has fewer than ``K`` rows, wrong width or non-finite values.
    """
    x64 = model._fit_data(x, model.n_components)
    xc = x64 - x64.mean(0)
    gen = torch.Generator().manual_seed(int(seed))
    idx = kmeans_plusplus(xc, model.n_components, gen)
    labels = torch.argmin(_sq_dist(xc, xc[idx]), dim=1)
    resp = torch.zeros(x64.shape[0], model.n_components, dtype=torch.float64, device=x.device)
    resp[torch.arange(x64.shape[0], device=x.device), labels] = 1.0
    return resp


@torch.no_grad()
@sized
def init_from_data(model: nn.Module, x: torch.Tensor, seed: int = 0) -> None:
    """k-means++ initialisation, as scikit-learn's ``GaussianMixture`` initialises.

    The responsibilities of :func:`initial_responsibilities` (hard assignment of every
    row to the nearest of ``K`` k-means++ centres, Arthur & Vassilvitskii 2007) go
    through one M-step: weights ``N_k / N``, means and covariances of each cluster
    (``+ reg_covar`` on the diagonal).  ``model``'s parameters are updated in place.

    Args:
        model: the :class:`~ppl_gen.models.gmm.GaussianMixture`.
        x: ``(N, D)`` training rows, ``N >= K``.
        seed: seed of the k-means++ draws.

    Raises:
        PplGenError: if ``x`` has fewer than ``K`` rows, wrong width or non-finite values.
    """
    x64 = model._fit_data(x, model.n_components)
    design = Design.of(x64, model.covariance)
    model._store(*_init_params(model, design, x, seed))


def _init_params(model: nn.Module, design: Design, x: torch.Tensor, seed: int):
    resp = initial_responsibilities(model, x, seed)
    return m_step(design, resp_stats(design, resp), model.reg_covar)


def _em_run(
    design: Design, params, max_iter: int, tol: float, t0: float, reg_covar: float
) -> tuple[FitHistory, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    n = design.n_total
    ll, stats, _ = e_pass(design, component_coefficients(design, *params))
    prev = ll / n
    history = FitHistory(extra={"initial_objective": prev})
    for _ in range(max_iter):
        params = m_step(design, stats, reg_covar)
        ll, stats, _ = e_pass(design, component_coefficients(design, *params))
        cur = ll / n
        history.objective.append(cur)
        history.seconds.append(time.perf_counter() - t0)
        if not math.isfinite(cur):
            raise PplGenError("EM: the log-likelihood became non-finite; increase reg_covar")
        if converged([prev, *history.objective], tol):
            history.converged = True
            break
    return history, params


@torch.no_grad()
@sized
def em(
    model: nn.Module,
    x: torch.Tensor,
    *,
    max_iter: int = 500,
    tol: float = 1e-6,
    n_init: int = 1,
    seed: int = 0,
    init: bool = True,
    dist: DistributedContext | None = None,
) -> FitHistory:
    """Expectation-maximisation for the mixture (PRML 9.2.2), parameters updated in place.

    Each iteration is an M-step (PRML 9.24-9.27: ``N_k = sum_n gamma_nk``,
    ``mu_k = sum_n gamma_nk x_n / N_k``, ``Sigma_k = sum_n gamma_nk (x_n - mu_k)(x_n -
    mu_k)^T / N_k + reg_covar I`` (diag: its diagonal), ``pi_k = N_k / N``) followed by
    the E-step (responsibilities, PRML 9.23) at the new parameters, which also gives
    their average log-likelihood; that is the recorded objective, so it never decreases
    (up to the ``reg_covar`` perturbation and rounding).  The run stops when
    ``|ll_t - ll_{t-1}| < tol |ll_{t-1}|`` or after ``max_iter`` iterations.  The same
    update sequence as scikit-learn's ``GaussianMixture.fit`` (whose stopping rule is an
    *absolute* change of the average log-likelihood), in float64, fully vectorised.

    Args:
        model: the :class:`~ppl_gen.models.gmm.GaussianMixture` to fit.
        x: ``(N, D)`` training rows.
        max_iter: maximum number of iterations (>= 1).
        tol: tolerance of the stopping rule, nats per datapoint (0: run all ``max_iter``).
        n_init: number of k-means++ restarts (seeds ``seed, seed + 1, ...``); the
            restart with the highest final log-likelihood is kept.
        seed: seed of the first restart.
        init: initialise with :func:`init_from_data`; ``False`` starts from the current
            parameters (then ``n_init`` must be 1).
        dist: data-parallel EM (:mod:`ppl_gen.core.distributed`): ``x`` is this rank's shard
            (:meth:`~ppl_gen.core.distributed.DistributedContext.shard` of the full data);
            each E-step's statistics ``R^T Z`` and log-likelihood are all-reduced, so
            every rank takes the same M-step.  k-means++ is sequential over the whole
            data: the initialisation runs on the gathered rows (identically on every
            rank), the iterations on the shards.  The fit equals the single-process fit
            up to float64 summation order.

    Returns:
        :class:`FitHistory` of the best restart: ``objective`` = average log-likelihood
        (nats per datapoint) after each iteration, ``seconds`` since the start of that
        restart (its k-means++ initialisation included); ``extra["restarts"]`` = final
        log-likelihood of every restart, ``extra["best"]`` = index of the kept one,
        ``extra["initial_objective"]`` = log-likelihood before the first iteration,
        ``extra["seconds_total"]`` = wall time of all restarts.

    Raises:
        PplGenError: for bad arguments, data with fewer than ``K`` rows or non-finite
            values, or a covariance that stops being positive definite.
    """
    require_positive_int("max_iter", max_iter)
    require_positive_int("n_init", n_init)
    require(isinstance(tol, (int, float)) and tol >= 0, f"tol must be >= 0, got {tol!r}")
    require(init or n_init == 1, "n_init > 1 needs init=True (k-means++ restarts)")
    t_all = time.perf_counter()
    if dist is None or not dist.distributed:
        x64 = model._fit_data(x, model.n_components if init else 1)
        design = init_design = Design.of(x64, model.covariance)
        x_init = x
    else:
        x64 = model._fit_data(x)
        x_init = dist.gather_shards(x64) if init else None
        if init:
            center = x_init.mean(0)
        else:
            total = dist.all_reduce_float(x64.shape[0], "EM statistics")
            center = dist.all_reduce_sum(x64.sum(0), "EM statistics") / total
        design = Design(x64, center, model.covariance, dist)
        require(
            design.n_total >= (model.n_components if init else 1),
            f"x: need at least {model.n_components} rows (n_components "
            f"{model.n_components}), got {design.n_total}",
        )
        init_design = Design(x_init, center, model.covariance) if init else None
    finals: list[float] = []
    best = None
    for r in range(n_init):
        t0 = time.perf_counter()
        params = _init_params(model, init_design, x_init, seed + r) if init else model._params64()
        history, params = _em_run(design, params, max_iter, tol, t0, model.reg_covar)
        finals.append(history.objective[-1])
        if best is None or finals[-1] > finals[best[0]]:
            best = (r, history, params)
    idx, history, params = best
    model._store(*params)
    history.extra.update(restarts=finals, best=idx, seconds_total=time.perf_counter() - t_all)
    return history


__all__ = ["em", "init_from_data", "initial_responsibilities", "kmeans_plusplus", "m_step"]
