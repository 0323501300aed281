"""Linear autoencoder vs PCA: the squared-error optimum spans the principal subspace.

A linear autoencoder ``x_hat = W_d (W_e x + b_e) + b_d`` (``MLPAutoencoder`` with no hidden
layer, ``output="linear"``) is fitted to convergence by full-batch L-BFGS in float64
(``fit_full_batch``); the largest principal angle between the column space of ``W_d`` and
the leading ``Z`` principal directions of scikit-learn's ``PCA`` is reported (target:
< 1 degree), with the reconstruction errors of both (the AE cannot beat PCA; at the optimum
they are equal; Baldi & Hornik 1989).

Digits (always) and MNIST (``--data-root``, default ``../shared/data/mnist``; skipped when
absent; first ``--mnist-n`` training images).  Writes ``benchmarks/results/linear_ae_pca.json``.

``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/linear_ae_pca.py``
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import ppl_gen  # noqa: F401  (sets MKL_ENABLE_INSTRUCTIONS before torch loads)

# isort: split
import torch
from sklearn.decomposition import PCA

from ppl_gen.autoencoders import MLPAutoencoder, fit_full_batch, principal_angles_degrees
from ppl_gen.core.io import write_json
from ppl_gen.data.datasets import load_dataset

REPO = Path(__file__).resolve().parents[1]


def measure(x: torch.Tensor, z: int, max_iter: int, seed: int = 0) -> dict:
    x = x.double()
    torch.manual_seed(seed)
    model = MLPAutoencoder(x.shape[1], z, (), output="linear").double()
    t0 = time.perf_counter()
    ae_error = fit_full_batch(model, x, max_iter=max_iter)
    seconds = time.perf_counter() - t0
    pca = PCA(z).fit(x.numpy())
    recon = pca.inverse_transform(pca.transform(x.numpy()))
    pca_error = float(((recon - x.numpy()) ** 2).sum(1).mean())
    angles = principal_angles_degrees(model.decoder[0].weight.detach().numpy(), pca.components_.T)
    return {
        "latent_dim": z,
        "n": int(x.shape[0]),
        "max_principal_angle_deg": float(angles.max()),
        "ae_squared_error": ae_error,
        "pca_squared_error": pca_error,
        "relative_excess_error": (ae_error - pca_error) / pca_error,
        "lbfgs_max_iter": max_iter,
        "seconds": seconds,
        "pass": bool(angles.max() < 1.0),
    }


def report(name: str, r: dict) -> None:
    print(
        f"{name:6s} Z={r['latent_dim']:3d}: max angle {r['max_principal_angle_deg']:.2e} deg, "
        f"squared error AE {r['ae_squared_error']:.5f} vs PCA {r['pca_squared_error']:.5f} "
        f"({r['seconds']:.1f} s)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--digits-dims", default="2,5,10")
    parser.add_argument("--mnist-dims", default="10")
    parser.add_argument("--mnist-n", type=int, default=5000)
    parser.add_argument("--max-iter", type=int, default=5000)
    parser.add_argument(
        "--out", default=str(REPO / "benchmarks" / "results" / "linear_ae_pca.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    results = {"digits": [], "mnist": []}
    digits = load_dataset("digits", seed=0).train
    for z in (int(v) for v in args.digits_dims.split(",")):
        r = measure(digits, z, args.max_iter)
        results["digits"].append(r)
        report("digits", r)
    if Path(args.data_root).is_dir():
        mnist = load_dataset("mnist", args.data_root, seed=0, n_train=args.mnist_n).train
        for z in (int(v) for v in args.mnist_dims.split(",")):
            r = measure(mnist, z, args.max_iter)
            results["mnist"].append(r)
            report("mnist", r)
    else:
        print(f"MNIST skipped: no folder {args.data_root}")
    results["load_average"] = [round(v, 2) for v in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
