"""ppl_gen's Gaussian mixture against scikit-learn: same answers, wall time per EM iteration.

Synthetic data (seeded): ``N`` rows in ``D`` dimensions from ``K`` overlapping
full-covariance Gaussians (default N = 100,000, D = 10, K = 10).  Both libraries start from
the *same* parameters: ``GaussianMixture.init_from_data`` (k-means++ seeding, hard
assignment, one M-step) is passed to scikit-learn as ``weights_init``, ``means_init`` and
``precisions_init``; both compute in float64 with ``reg_covar = 1e-6``.

1. **Fixed iterations** (``--iters``, ``tol = 0`` on both): wall time of the whole call
   (ours: ``em(x, init=False)``, which also builds its feature matrix; scikit-learn:
   ``fit``, which also validates the input and runs a final E-step), interleaved over
   ``--repeats`` rounds, median taken (the machine is shared and its speed drifts); and the
   final average log-likelihood (ours: the recorded objective; scikit-learn: ``score(X)``).
   scikit-learn runs twice per round: with its BLAS thread pool as found (what a user gets)
   and limited to one thread (``threadpoolctl``), since ppl_gen runs a problem of this size
   on one torch thread by default (on a busy 2-core machine a parallel region can wait
   milliseconds for a descheduled worker).
   Targets: ``|difference| <= 1e-4`` nats per point, time ratio ours / sklearn ``<= 1.0``.
2. **Converged run**: ours with relative tolerance ``--tol``, scikit-learn with the
   equivalent absolute tolerance ``tol * |ll|`` (its rule is absolute), up to
   ``--max-iter`` iterations; both final log-likelihoods and iteration counts (scikit-learn
   with one BLAS thread here, its faster setting on this machine).
3. **Mean-field** (variational Bayesian GMM, PRML 10.2) on the first ``--vb-n`` rows
   against ``BayesianGaussianMixture(weight_concentration_prior_type=
   "dirichlet_distribution")`` with its default priors (ours uses the same defaults), both
   started from the same k-means++ responsibilities (scikit-learn's own fit loop --
   ``_initialize``, then ``_e_step``, ``_m_step``, ``_compute_lower_bound`` per iteration --
   run by hand, since ``fit`` cannot take responsibilities).  Compared: the lower bound in
   scikit-learn's convention (its constants dropped; see
   ``GaussianMixture.mean_field_lower_bound_sklearn_convention``), nats per point, at every
   iteration.  Target: ``<= 1e-3``.  Also reported: the conversion to the full bound of
   PRML 10.70 (full = sklearn + offset + reg_covar term, see the model's docs) and its
   residual.

Writes ``benchmarks/results/gmm_vs_sklearn.json``.

``.venv/bin/python benchmarks/gmm_vs_sklearn.py [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import ppl_gen  # noqa: F401  (sets MKL_ENABLE_INSTRUCTIONS before torch loads)

# isort: split
import numpy as np
import sklearn
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from threadpoolctl import threadpool_limits

from ppl_gen.models import GaussianMixture
from ppl_gen.models.gmm_features import chol_inverse, cholesky

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def synthetic_mixture(n: int, d: int, k: int, seed: int = 0) -> torch.Tensor:
    """``(n, d)`` float32 rows from ``k`` overlapping full-covariance Gaussians."""
    g = torch.Generator().manual_seed(seed)
    means = 1.5 * torch.randn(k, d, generator=g, dtype=torch.float64)
    mix = 0.4 * torch.randn(k, d, d, generator=g, dtype=torch.float64)
    weights = 1.0 + torch.rand(k, generator=g, dtype=torch.float64)
    c = torch.multinomial(weights / weights.sum(), n, replacement=True, generator=g)
    noise = torch.randn(n, 1, d, generator=g, dtype=torch.float64)
    x = means[c] + (noise @ mix[c].transpose(-1, -2)).squeeze(1)
    return x.float()


@torch.no_grad()
def sklearn_init(model: GaussianMixture) -> dict:
    """The model's parameters as ``sklearn.mixture.GaussianMixture`` init arguments
    (``weights_init``, ``means_init``, ``precisions_init``; float64 numpy), so that
    scikit-learn starts from exactly the parameters ``em(x, init=False)`` starts from.
    (The tests' copy is ``tests/sklearn_bridge.py``.)"""
    log_w, mu, cov = model._params64()
    prec = 1.0 / cov if model.covariance == "diag" else chol_inverse(cholesky(cov, "covariance"))
    return {
        "weights_init": log_w.exp().cpu().numpy(),
        "means_init": mu.cpu().numpy(),
        "precisions_init": prec.cpu().numpy(),
    }


def environment() -> dict:
    info = {
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    from threadpoolctl import threadpool_info

    info["threadpools"] = [
        {k: p.get(k) for k in ("user_api", "internal_api", "num_threads", "version")}
        for p in threadpool_info()
    ]
    info["ppl_gen_threads_note"] = (
        "GaussianMixture(threads=None) runs problems below 2**24 feature entries on one "
        "torch thread (see models/gmm_features.py threads_for)"
    )
    return info


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _sk_fit(model, xn, init, iters, tol, blas_threads):
    gm = SkGaussianMixture(
        model.n_components,
        covariance_type="full",
        tol=tol,
        max_iter=iters,
        reg_covar=model.reg_covar,
        **init,
    )
    limit = threadpool_limits(blas_threads) if blas_threads else nullcontext()
    t0 = time.perf_counter()
    with limit, warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(xn)
    return gm, time.perf_counter() - t0


def fixed_iterations(model, state, x, xn, init, iters, repeats) -> dict:
    times: dict[str, list[float]] = {"ours": [], "sklearn": [], "sklearn_1_blas_thread": []}
    ours_iter = []
    ours_ll = sk_ll = None
    for r in range(repeats):
        order = list(times)[r % 3 :] + list(times)[: r % 3]
        for who in order:
            if who == "ours":
                model.load_state_dict(state)
                t0 = time.perf_counter()
                hist = model.em(x, max_iter=iters, tol=0.0, init=False)
                times[who].append(time.perf_counter() - t0)
                if hist.iterations > 1:
                    ours_iter.append(float(np.median(np.diff(hist.seconds))))
                ours_ll = hist.objective[-1]
            else:
                threads = 1 if who == "sklearn_1_blas_thread" else None
                gm, seconds = _sk_fit(model, xn, init, iters, 0.0, threads)
                times[who].append(seconds)
                sk_ll = gm.score(xn)
            print(f"  round {r} {who}: {times[who][-1]:.2f} s")
    med = {who: statistics.median(t) for who, t in times.items()}
    return {
        "iterations": iters,
        "repeats": repeats,
        "seconds": times,
        "seconds_median": med,
        "seconds_per_iteration": {who: t / iters for who, t in med.items()},
        "ours_median_iteration_seconds_inside_em": statistics.median(ours_iter)
        if ours_iter
        else None,
        "time_ratio_ours_over_sklearn": med["ours"] / med["sklearn"],
        "time_ratio_ours_over_sklearn_1_blas_thread": med["ours"] / med["sklearn_1_blas_thread"],
        "ours_final_avg_loglik": ours_ll,
        "sklearn_final_avg_loglik": sk_ll,
        "loglik_difference": ours_ll - sk_ll,
        "target_loglik_difference": 1e-4,
        "target_time_ratio": 1.0,
        "pass": abs(ours_ll - sk_ll) <= 1e-4 and med["ours"] / med["sklearn"] <= 1.0,
    }


def converged(model, state, x, xn, init, tol, max_iter) -> dict:
    model.load_state_dict(state)
    t0 = time.perf_counter()
    hist = model.em(x, max_iter=max_iter, tol=tol, init=False)
    ours_t = time.perf_counter() - t0
    sk_tol = tol * abs(hist.objective[-2] if hist.iterations > 1 else hist.objective[-1])
    gm, sk_t = _sk_fit(model, xn, init, max_iter, sk_tol, 1)
    sk_ll = gm.score(xn)
    return {
        "ours_relative_tol": tol,
        "sklearn_absolute_tol": sk_tol,
        "max_iter": max_iter,
        "ours_iterations": hist.iterations,
        "ours_converged": hist.converged,
        "sklearn_iterations": int(gm.n_iter_),
        "sklearn_converged": bool(gm.converged_),
        "ours_seconds": ours_t,
        "sklearn_seconds": sk_t,
        "sklearn_blas_threads": 1,
        "time_ratio_ours_over_sklearn": ours_t / sk_t,
        "ours_final_avg_loglik": hist.objective[-1],
        "sklearn_final_avg_loglik": sk_ll,
        "loglik_difference": hist.objective[-1] - sk_ll,
        "pass": abs(hist.objective[-1] - sk_ll) <= 1e-4,
    }


def mean_field(x_vb, k, iters) -> dict:
    n, d = x_vb.shape
    model = GaussianMixture(d, k)
    resp = model.initial_responsibilities(x_vb, seed=0)
    t0 = time.perf_counter()
    hist = model.mean_field(x_vb, resp=resp, max_iter=iters, tol=0.0)
    ours_t = time.perf_counter() - t0
    xn = x_vb.double().numpy()
    t0 = time.perf_counter()
    bgm = BayesianGaussianMixture(
        n_components=k,
        covariance_type="full",
        weight_concentration_prior_type="dirichlet_distribution",
        reg_covar=model.reg_covar,
    )
    bgm._check_parameters(xn)
    bgm._initialize(xn, resp.numpy())
    bounds = []
    for _ in range(iters):
        log_prob_norm, log_resp = bgm._e_step(xn)
        bgm._m_step(xn, log_resp)
        bounds.append(bgm._compute_lower_bound(log_resp, log_prob_norm))
    sk_t = time.perf_counter() - t0
    ours = np.array(hist.extra["lower_bound_sklearn"])
    diffs = np.abs(ours - np.array(bounds)) / n
    offset = model.mean_field_sklearn_offset()
    vb = model.vb
    nk = vb.alpha - vb.prior.alpha0
    reg_term = 0.5 * model.reg_covar * float((vb.nu * nk * vb.W.diagonal(0, -2, -1).sum(-1)).sum())
    return {
        "n": n,
        "iterations": iters,
        "priors": "scikit-learn defaults (alpha0 = 1/K, beta0 = 1, m0 = mean, nu0 = D, "
        "W0^-1 = data covariance)",
        "ours_bound_sklearn_convention_per_point": float(ours[-1] / n),
        "sklearn_lower_bound_per_point": float(bounds[-1] / n),
        "bound_difference_final_per_point": float(diffs[-1]),
        "bound_difference_max_over_iterations_per_point": float(diffs.max()),
        "ours_full_elbo_per_point": hist.objective[-1],
        "sklearn_offset_per_point": offset / n,
        "reg_covar_term_per_point": reg_term / n,
        "conversion_residual_per_point": hist.objective[-1] - (ours[-1] + offset + reg_term) / n,
        "ours_elbo_min_step": float(np.min(np.diff(hist.objective))) if iters > 1 else None,
        "ours_seconds": ours_t,
        "sklearn_seconds": sk_t,
        "time_ratio_ours_over_sklearn": ours_t / sk_t,
        "target_bound_difference": 1e-3,
        "pass": float(diffs.max()) <= 1e-3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--iters", type=int, default=100, help="fixed-iteration comparison")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tol", type=float, default=1e-8, help="converged run (relative)")
    parser.add_argument("--max-iter", type=int, default=500, help="converged run cap")
    parser.add_argument("--vb-n", type=int, default=20_000)
    parser.add_argument("--vb-iters", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "gmm_vs_sklearn.json")
    args = parser.parse_args()
    if args.quick:
        args.n, args.iters, args.repeats = 20_000, 20, 1
        args.max_iter, args.vb_n, args.vb_iters = 100, 5_000, 30

    x = synthetic_mixture(args.n, args.dim, args.components, args.seed)
    xn = x.double().numpy()
    model = GaussianMixture(args.dim, args.components, "full")
    t0 = time.perf_counter()
    model.init_from_data(x, seed=args.seed)
    init_seconds = time.perf_counter() - t0
    init = sklearn_init(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    payload = {
        "benchmark": "gmm_vs_sklearn",
        "quick": args.quick,
        "data": {
            "n": args.n,
            "dim": args.dim,
            "components": args.components,
            "seed": args.seed,
            "kind": "synthetic overlapping full-covariance mixture",
        },
        "init": "ppl_gen k-means++ (greedy) + hard assignment + M-step, passed to sklearn as "
        "weights_init/means_init/precisions_init",
        "init_seconds": init_seconds,
        "environment": environment(),
        "load_average_start": load(),
    }
    print(f"fixed iterations: N={args.n} D={args.dim} K={args.components} x {args.iters}")
    payload["fixed_iterations"] = fixed_iterations(
        model, state, x, xn, init, args.iters, args.repeats
    )
    print(json.dumps(payload["fixed_iterations"], indent=1))
    print(f"converged run: tol={args.tol} max_iter={args.max_iter}")
    payload["converged"] = converged(model, state, x, xn, init, args.tol, args.max_iter)
    print(json.dumps(payload["converged"], indent=1))
    print(f"mean-field: N={args.vb_n} x {args.vb_iters}")
    payload["mean_field"] = mean_field(x[: args.vb_n], args.components, args.vb_iters)
    print(json.dumps(payload["mean_field"], indent=1))
    payload["load_average_end"] = load()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
