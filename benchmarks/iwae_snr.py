"""Signal-to-noise ratio of IWAE-K gradient estimators against K (Rainforth et al. 2018).

The Gaussian model of Rainforth et al. 2018, sec. 4: ``z ~ N(mu, I_20)``,
``x | z ~ N(z, I_20)``, guide ``q(z | x) = N(A x + b, 2/3 I_20)``, with ``mu``, ``A``, ``b``
at the optimum (``mu`` the data mean, ``A = I / 2``, ``b = mu / 2``) plus ``N(0, 0.01^2)``
perturbations, and one datapoint ``x`` drawn from the model.  For each K, ``R`` independent
gradient estimates of the training loss of ``ppl_gen.infer.objectives`` (every replicate
has its own copy of the parameters, so one backward pass yields ``R`` draws), and per
parameter element ``SNR = |mean| / std`` over the draws, averaged over the elements of
``b`` (encoder) and of ``mu`` (decoder / prior).  An SNR near ``1 / sqrt(R)`` is the
estimation floor (the mean of R zero-mean draws), drawn as a dotted line: below it the
measured SNR no longer resolves the true one.

Expected (Rainforth et al. 2018, Tucker et al. 2019): the encoder SNR of ``reparam`` falls
like ``1 / sqrt(K)``; ``dreg``'s does not fall (it grows like ``sqrt(K)``); the decoder's
SNR grows with K for all (the decoder gradient is the same for every estimator).

``.venv/bin/python benchmarks/iwae_snr.py [--replicates 1000] [--ks 1,3,10,30,100,300,1000]``
writes ``benchmarks/results/iwae_snr.json`` and ``iwae_snr.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import ppl_gen  # noqa: F401

# isort: split
import pyro
import pyro.distributions as dist
import torch
from matplotlib.figure import Figure
from repo_paths import shown

from ppl_gen.infer.objectives import ImportanceWeightedObjective
from ppl_gen.lvm.plates import data_plate

RESULTS = Path(__file__).resolve().parent / "results"
D = 20


def make_problem(replicates: int, seed: int = 0):
    """Model, guide and the replicated datapoint of the Rainforth et al. toy problem."""
    gen = torch.Generator().manual_seed(seed)
    mu_true = torch.randn(D, generator=gen)
    x0 = mu_true + math.sqrt(2.0) * torch.randn(D, generator=gen)  # x ~ N(mu, 2 I)

    def perturbed(t: torch.Tensor) -> torch.Tensor:
        t = t + 0.01 * torch.randn(t.shape, generator=gen)
        return t.expand(replicates, *t.shape).clone()

    init = {
        "mu": perturbed(mu_true),
        "A": perturbed(0.5 * torch.eye(D)),
        "b": perturbed(mu_true / 2),
    }

    def model(x, indices=None, size=None):
        mu = pyro.param("mu", init["mu"])
        with data_plate(x, indices, size):
            z = pyro.sample("z", dist.Normal(mu[indices], 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x, indices=None, size=None):
        a, b = pyro.param("A", init["A"]), pyro.param("b", init["b"])
        loc = torch.einsum("rij,rj->ri", a[indices], x) + b[indices]
        with data_plate(x, indices, size):
            pyro.sample("z", dist.Normal(loc, math.sqrt(2.0 / 3.0)).to_event(1))

    return model, guide, x0.expand(replicates, D).contiguous()


def snr(draws: torch.Tensor) -> float:
    """Mean over elements of ``|mean| / std`` over the replicate dim 0."""
    return float((draws.mean(0).abs() / draws.std(0)).mean())


def measure(k: int, estimator: str, replicates: int, chunk: int, seed: int) -> dict:
    pyro.clear_param_store()
    pyro.set_rng_seed(seed + k)
    model, guide, x = make_problem(replicates, seed)
    obj = ImportanceWeightedObjective("iwae", k, estimator, max_plate_nesting=1)
    names = ("b", "mu")
    draws = {n: torch.zeros(replicates, D) for n in names}
    for idx in torch.arange(replicates).split(chunk):
        loss = obj.differentiable_loss(model, guide, x[idx], idx, replicates)
        params = [pyro.param(n).unconstrained() for n in names]
        grads = torch.autograd.grad(loss, params)
        for n, g in zip(names, grads, strict=True):
            # loss = -(R / B) sum_b IWAE_b: row b's gradient of IWAE_b is -(B / R) g[b].
            draws[n][idx] = -g[idx] * idx.shape[0] / replicates
    return {"encoder_snr": snr(draws["b"]), "decoder_snr": snr(draws["mu"])}


def plot(results: dict, ks: list[int], path: Path, replicates: int) -> None:
    fig = Figure(figsize=(9, 3.6))
    for i, (key, title) in enumerate(
        [("encoder_snr", "encoder (b)"), ("decoder_snr", "decoder / prior (mu)")]
    ):
        ax = fig.add_subplot(1, 2, i + 1)
        for est, style in (("reparam", "o-"), ("stl", "^--"), ("dreg", "s-")):
            if est in results:
                ax.plot(ks, [results[est][str(k)][key] for k in ks], style, label=est)
        floor = 1 / math.sqrt(replicates)  # |mean| of R draws of a zero-mean gradient
        ax.axhline(floor, color="grey", ls=":", label=f"estimation floor 1/sqrt(R), R={replicates}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("K (IWAE samples per datapoint)")
        ax.set_ylabel("gradient SNR |mean| / std")
        ax.set_title(f"IWAE-K gradient SNR, {title}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ks", default="1,3,10,30,100,300,1000")
    parser.add_argument("--estimators", default="reparam,stl,dreg")
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--max-samples", type=int, default=200_000, help="rows x K per pass")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "iwae_snr.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ks = [int(k) for k in args.ks.split(",")]
    results: dict = {}
    t0 = time.perf_counter()
    for est in args.estimators.split(","):
        results[est] = {}
        for k in ks:
            chunk = max(1, min(args.replicates, args.max_samples // k))
            results[est][str(k)] = measure(k, est, args.replicates, chunk, args.seed)
            r = results[est][str(k)]
            print(
                f"{est:>7} K={k:<5} encoder SNR {r['encoder_snr']:.4f}  decoder SNR "
                f"{r['decoder_snr']:.3f}",
                flush=True,
            )
    payload = {
        "benchmark": "iwae_snr",
        "problem": "Rainforth et al. 2018 sec. 4 Gaussian, D=20, one datapoint",
        "replicates": args.replicates,
        "ks": ks,
        "results": results,
        "seconds": time.perf_counter() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    plot(results, ks, args.out.with_suffix(".png"), args.replicates)
    print(f"wrote {shown(args.out)} and {shown(args.out.with_suffix('.png'))}")


if __name__ == "__main__":
    main()
