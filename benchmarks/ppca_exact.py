"""Linear-Gaussian models against the known answer: EM vs closed form, mean-field vs exact.

On the digits (default) or MNIST (``--data mnist``, grey levels, no binarisation):

1. **PPCA EM vs the closed-form maximum-likelihood solution** (Tipping & Bishop 1999,
   eq. 7-8): EM (``PPCA.em``, tolerance ``--em-tol``) and ``PPCA.closed_form_ml`` on the
   training split; difference of the average log-likelihoods (target <= 1e-3 nats/point)
   and of ``W W^T`` (``W`` is identified up to a rotation).
2. **Mean-field bounds vs exact log p(x)**: mean-field variational EM (``mean_field``) on the
   training split, then on the test split the coordinate-ascent ``q`` for the fitted model
   (``mean_field_bounds``: IWAE-K and the Monte Carlo ELBO with ``MeanFieldGuide`` through
   ``ppl_gen.infer.bounds.evaluate_bounds``) against the model's exact ``log p(x)``; target
   ``exact - IWAE-K <= 0.05`` nats/point.  The same for factor analysis, and for the
   EM-fitted PPCA (whose ``W`` carries an arbitrary rotation, so its posterior is correlated).

Prints a table and stores the figures under the dataset's key (``"digits"`` / ``"mnist"``) of
``benchmarks/results/ppca_exact.json`` (or ``--out``), keeping the other dataset's entry.

``.venv/bin/python benchmarks/ppca_exact.py [--data mnist] [--latent-dim Q] [--k K]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import ppl_gen  # noqa: F401  (sets MKL_ENABLE_INSTRUCTIONS before torch loads)

# isort: split
import pyro
import torch

from ppl_gen.data.datasets import load_dataset
from ppl_gen.models import PPCA, FactorAnalysis

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data" / "mnist"
RESULTS = REPO / "benchmarks" / "results"
EM_TARGET = 1e-3
IWAE_TARGET = 0.05


def _display(path: Path) -> str:
    """``path`` relative to the repository (never an absolute path in the output)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return os.path.relpath(path, REPO)


def _mean_field_row(
    model, name: str, x_test: torch.Tensor, k: int, target: float | None = IWAE_TARGET
) -> dict:
    """Test bounds of the mean-field q for ``model`` against its exact log p(x)."""
    t0 = time.perf_counter()
    bounds = model.mean_field_bounds(x_test, k=k)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        exact = model.log_marginal(x_test).double()
        closed = model.mean_field_elbo(x_test).double()
    gap = float((exact - bounds.iwae.double()).mean())
    return {
        "model": name,
        "exact_log_px": float(exact.mean()),
        "elbo_closed_form": float(closed.mean()),
        "elbo_monte_carlo": bounds.elbo_mean,
        "elbo_monte_carlo_se": bounds.elbo_se,
        "iwae": bounds.iwae_mean,
        "iwae_se": bounds.iwae_se,
        "k": k,
        "exact_minus_elbo": float((exact - closed).mean()),
        "exact_minus_iwae": gap,
        "target": target,
        "within_target": None if target is None else gap <= target,
        "bounds_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("digits", "mnist"), default="digits")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=DEFAULT_DATA_ROOT,
        help="MNIST folder containing MNIST/raw/*-ubyte (default: ../shared/data/mnist "
        "relative to the repository root)",
    )
    parser.add_argument("--latent-dim", type=int, default=None, help="Q (digits 10, MNIST 20)")
    parser.add_argument("--k", type=int, default=1000, help="IWAE samples per test point")
    parser.add_argument("--n-train", type=int, default=None, help="training rows (default all)")
    parser.add_argument(
        "--n-test", type=int, default=None, help="test rows (default: all digits, 1000 MNIST)"
    )
    parser.add_argument("--em-tol", type=float, default=1e-10)
    parser.add_argument("--em-max-iter", type=int, default=5000)
    parser.add_argument("--mf-tol", type=float, default=1e-9)
    parser.add_argument(
        "--mf-max-iter",
        type=int,
        default=None,
        help="mean-field iterations (digits 2000, MNIST 300)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "ppca_exact.json",
        help="JSON file; the run is stored under its dataset's key, other keys are kept",
    )
    args = parser.parse_args()

    mnist = args.data == "mnist"
    q = args.latent_dim or (20 if mnist else 10)
    n_test = args.n_test or (1000 if mnist else None)
    mf_max_iter = args.mf_max_iter or (300 if mnist else 2000)
    if mnist and not (args.data_root / "MNIST" / "raw").is_dir():
        parser.error(f"MNIST not found under --data-root {_display(args.data_root)}")
    splits = load_dataset(
        args.data, args.data_root if mnist else None, n_train=args.n_train, n_test=n_test
    )
    x_train, x_test = splits.train, splits.test
    d = splits.data_dim
    pyro.set_rng_seed(args.seed)
    print(
        f"{args.data}: train {tuple(x_train.shape)}, test {tuple(x_test.shape)}, Q={q}, "
        f"K={args.k}, {torch.get_num_threads()} threads"
    )

    # 1. PPCA: EM vs the closed form (TB99 eq. 7-8).
    closed = PPCA(d, q)
    t0 = time.perf_counter()
    ll_ml = closed.closed_form_ml(x_train)
    closed_seconds = time.perf_counter() - t0
    em_model = PPCA(d, q)
    history = em_model.em(x_train, max_iter=args.em_max_iter, tol=args.em_tol, seed=args.seed)
    ll_em = history.objective[-1]
    W_em, W_ml = em_model.W.detach().double(), closed.W.detach().double()
    ww_rel = float((W_em @ W_em.T - W_ml @ W_ml.T).norm() / (W_ml @ W_ml.T).norm())
    em_row = {
        "avg_loglik_em": ll_em,
        "avg_loglik_closed_form": ll_ml,
        "closed_minus_em": ll_ml - ll_em,
        "target": EM_TARGET,
        "within_target": abs(ll_ml - ll_em) <= EM_TARGET,
        "ww_relative_difference": ww_rel,
        "sigma2_em": em_model.sigma2,
        "sigma2_closed_form": closed.sigma2,
        "iterations": history.iterations,
        "converged": history.converged,
        "em_seconds": history.seconds[-1],
        "em_seconds_per_iteration": history.seconds[-1] / history.iterations,
        "closed_form_seconds": closed_seconds,
        "monotone": all(
            b >= a - 1e-9 * abs(a)
            for a, b in zip(history.objective[:-1], history.objective[1:], strict=True)
        ),
    }
    with torch.no_grad():
        em_row["test_avg_loglik_em"] = float(em_model.log_marginal(x_test).mean())
        em_row["test_avg_loglik_closed_form"] = float(closed.log_marginal(x_test).mean())

    # 2. Mean-field variational EM, then test bounds vs exact log p(x).
    fits, rows = {}, []
    for name, cls in (("PPCA", PPCA), ("FactorAnalysis", FactorAnalysis)):
        model = cls(d, q)
        mf = model.mean_field(x_train, max_iter=mf_max_iter, tol=args.mf_tol, seed=args.seed)
        fits[name] = {
            "iterations": mf.iterations,
            "converged": mf.converged,
            "train_elbo": mf.objective[-1],
            "seconds": mf.seconds[-1],
            "seconds_per_iteration": mf.seconds[-1] / mf.iterations,
        }
        with torch.no_grad():
            fits[name]["train_avg_loglik"] = float(model.log_marginal(x_train).mean())
        row = _mean_field_row(model, f"{name} (mean-field fit)", x_test, args.k)
        rows.append(row)
    # Reference, no target: EM's W = W_ML R has an arbitrary rotation R, so the exact
    # posterior covariance is not diagonal and a factorised q must lose something.
    rows.append(_mean_field_row(em_model, "PPCA (EM fit, rotated W)", x_test, args.k, None))

    print("\nPPCA EM vs closed form (TB99 eq. 7-8), train, nats/point")
    print(f"  closed form  {ll_ml:12.6f}   ({closed_seconds:.3f} s)")
    print(
        f"  EM           {ll_em:12.6f}   ({history.iterations} it, converged={history.converged}, "
        f"{history.seconds[-1]:.2f} s, {1e3 * em_row['em_seconds_per_iteration']:.2f} ms/it)"
    )
    print(
        f"  difference   {ll_ml - ll_em:12.2e}   (target <= {EM_TARGET:g}); "
        f"|WW^T| rel. diff {ww_rel:.2e}"
    )
    print("\nMean-field variational EM (train)")
    for name, fit in fits.items():
        print(
            f"  {name:15s} ELBO {fit['train_elbo']:10.4f}  log p(x) {fit['train_avg_loglik']:10.4f}"
            f"  {fit['iterations']} it, {fit['seconds']:.2f} s"
        )
    print(f"\nTest bounds of the mean-field q vs exact log p(x), nats/point (K={args.k})")
    print(
        f"  {'model':28s} {'exact':>10s} {'ELBO cf':>10s} {'ELBO MC':>10s} {'IWAE':>10s}"
        f" {'exact-IWAE':>11s} {'s':>6s}"
    )
    for r in rows:
        print(
            f"  {r['model']:28s} {r['exact_log_px']:10.4f} {r['elbo_closed_form']:10.4f}"
            f" {r['elbo_monte_carlo']:10.4f} {r['iwae']:10.4f} {r['exact_minus_iwae']:11.2e}"
            f" {r['bounds_seconds']:6.1f}"
        )

    entry = {
        "data": args.data,
        "data_root": _display(args.data_root) if mnist else None,
        "latent_dim": q,
        "n_train": int(x_train.shape[0]),
        "n_test": int(x_test.shape[0]),
        "data_dim": d,
        "seed": args.seed,
        "em_vs_closed_form": em_row,
        "mean_field_fits": fits,
        "mean_field_test_bounds": rows,
        "environment": {
            "torch": torch.__version__,
            "pyro": pyro.__version__,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
    }
    payload = {"benchmark": "ppca_exact"}
    if args.out.is_file():
        try:
            payload = json.loads(args.out.read_text())
        except json.JSONDecodeError:
            pass
    payload[args.data] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"\nwrote {_display(args.out)}")


if __name__ == "__main__":
    main()
