"""AIS accuracy and cost against the number of steps (issue 13, items 3 and 5c).

Part A, exact answer known: probabilistic PCA and factor analysis (Q = 5) fitted to the
scikit-learn digits (64 pixels in [0, 1]); forward AIS from the prior on ``--n-exact`` test
images for each T in ``--steps``; reported per T: mean error ``AIS - exact`` (nats per
image), its Monte Carlo standard error, mean absolute per-image error, and seconds per 1,000
test images.  Target: |error| <= 0.01 nats/image at the largest T.

Part B, MNIST VAE (skipped when ``--data-root`` has no MNIST): a 784-200-20 Bernoulli VAE
with an amortised Gaussian encoder trained ``--vae-epochs`` epochs (``ppl_gen.train``,
dynamic binarisation); on the first ``--n-vae`` test images: IWAE-K for K in ``--iwae-k``,
forward AIS from the encoder for each T in ``--vae-steps``; then BDMC (Grosse et al. 2015) on
``--n-bdmc`` images simulated from the VAE at the largest T: lower, upper, gap.

All float32 (as the library runs), one thread, AIS with ``--chains`` chains and
``--leapfrog`` leapfrog steps, sigmoid schedule, adaptive step size.

``.venv/bin/python benchmarks/ais_accuracy.py [--quick] [--data-root DIR]``
"""

from __future__ import annotations

import argparse
import os
import time

import ppl_gen  # noqa: F401  (sets MKL_ENABLE_INSTRUCTIONS before torch loads)

# isort: split
import torch
from plain_vae import DEFAULT_DATA_ROOT, RESULTS, environment, load_mnist, write_json

from ppl_gen.infer.ais import evaluate_ais
from ppl_gen.infer.bdmc import bdmc
from ppl_gen.infer.bounds import evaluate_bounds


def ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",")]


def exact_rows(model, x, steps, chains, leapfrog, seed) -> list[dict]:
    exact = model.log_marginal(x).detach()
    rows = []
    for t in steps:
        est = evaluate_ais(model, x, steps=t, chains=chains, leapfrog=leapfrog, seed=seed)
        err = est.log_px - exact
        rows.append(
            {
                "steps": t,
                "error": float(err.mean()),
                "error_mc_se": est.mc_se,
                "abs_error": float(err.abs().mean()),
                "acceptance": float(est.acceptance.mean()),
                "seconds_per_1000": est.seconds_per_1000,
            }
        )
        print(
            f"  T={t:5d}: AIS - exact {rows[-1]['error']:+.4f} ± {est.mc_se:.4f} nats/image "
            f"(mean |err| {rows[-1]['abs_error']:.3f}), {est.seconds_per_1000:.0f} s per 1000",
            flush=True,
        )
    return rows


def part_exact(args) -> dict:
    from ppl_gen.models.factor_analysis import FactorAnalysis
    from ppl_gen.models.ppca import PPCA

    data = ppl_gen.load_dataset("digits", binarize="none", seed=0)
    x = data.test[: args.n_exact]
    out = {}
    for name, cls in (("ppca", PPCA), ("fa", FactorAnalysis)):
        if name not in args.exact_models:
            continue
        model = cls(64, 5)
        model.init_from_data(data.train, seed=0)
        model.em(data.train, max_iter=200)
        exact = float(model.log_marginal(x).detach().mean())
        print(f"{name}: exact test log p(x) {exact:.3f} nats/image ({x.shape[0]} images)")
        out[name] = {
            "exact": exact,
            "rows": exact_rows(model, x, args.steps, args.chains, args.leapfrog, args.seed),
        }
    return out


def part_vae(args) -> dict | None:
    data = load_mnist(args.data_root, required=False)
    if data is None:
        print(f"MNIST not found under {args.data_root}: part B skipped")
        return None
    from ppl_gen.guides import AmortisedGaussianGuide

    torch.manual_seed(args.seed)
    model = ppl_gen.LatentVariableModel(20, ppl_gen.mlp(20, [200], 784), 784)
    guide = AmortisedGaussianGuide(model, hidden=(200,))
    t0 = time.perf_counter()
    ppl_gen.train(model, guide, data, ppl_gen.TrainConfig(epochs=args.vae_epochs, batch_size=100))
    train_seconds = time.perf_counter() - t0
    x = data.test[: args.n_vae]
    iwae, per_image = {}, {}
    for k in args.iwae_k:
        b = evaluate_bounds(model, guide, x, k=k)
        iwae[k], per_image[k] = {"iwae": b.iwae_mean, "se": b.iwae_se, "elbo": b.elbo_mean}, b.iwae
        print(f"  IWAE-{k}: {b.iwae_mean:.3f} ± {b.iwae_se:.3f} (ELBO {b.elbo_mean:.3f})")
    ais = []
    for t in args.vae_steps:
        est = evaluate_ais(
            model, x, guide, steps=t, chains=args.chains, leapfrog=args.leapfrog, seed=args.seed
        )
        k_max = max(args.iwae_k)
        diff = est.log_px - per_image[k_max]
        ais.append(
            {
                "steps": t,
                "ais": est.mean,
                "se": est.se,
                "mc_se": est.mc_se,
                f"ais_minus_iwae_{k_max}": float(diff.mean()),
                f"ais_minus_iwae_{k_max}_se": float(diff.std() / diff.numel() ** 0.5),
                "acceptance": float(est.acceptance.mean()),
                "seconds_per_1000": est.seconds_per_1000,
            }
        )
        print(
            f"  AIS-{t}: {est.mean:.3f} ± {est.se:.3f} (MC ± {est.mc_se:.3f}); AIS - IWAE-"
            f"{k_max} {ais[-1][f'ais_minus_iwae_{k_max}']:+.3f} ± "
            f"{ais[-1][f'ais_minus_iwae_{k_max}_se']:.3f}; {est.seconds_per_1000:.0f} s per 1000",
            flush=True,
        )
    res = bdmc(
        model,
        x,
        n=args.n_bdmc,
        guide=guide,
        steps=max(args.vae_steps),
        chains=args.chains,
        leapfrog=args.leapfrog,
        seed=args.seed,
    )
    s = res.summary()
    print(
        f"  BDMC T={s['steps']} on {s['n']} simulated images: lower {s['lower']:.3f} ± "
        f"{s['lower_mc_se']:.3f}, upper {s['upper']:.3f} ± {s['upper_mc_se']:.3f}, gap "
        f"{s['gap']:.3f} nats/image ({s['seconds']:.0f} s)",
        flush=True,
    )
    return {
        "model": "784-200-20 Bernoulli VAE, amortised Gaussian encoder (200)",
        "epochs": args.vae_epochs,
        "train_seconds": train_seconds,
        "n_test": int(x.shape[0]),
        "iwae": iwae,
        "ais": ais,
        "bdmc": s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=DEFAULT_DATA_ROOT)
    parser.add_argument("--steps", type=ints, default=[30, 100, 300, 1000])
    parser.add_argument("--n-exact", type=int, default=50)
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--leapfrog", type=int, default=5)
    parser.add_argument("--vae-epochs", type=int, default=10)
    parser.add_argument("--n-vae", type=int, default=50)
    parser.add_argument("--vae-steps", type=ints, default=[100, 500])
    parser.add_argument("--iwae-k", type=ints, default=[1, 50, 1000, 5000])
    parser.add_argument("--n-bdmc", type=int, default=20)
    parser.add_argument("--exact-models", default="ppca,fa", help="of ppca, fa")
    parser.add_argument("--skip-vae", action="store_true", help="part A only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke run)")
    parser.add_argument("--name", default="ais_accuracy")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.n_exact, args.chains = [10, 30], 20, 4
        args.vae_epochs, args.n_vae, args.vae_steps, args.iwae_k = 1, 10, [10], [1, 50]
        args.n_bdmc = 5
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    result = {
        "settings": {k: (str(v) if k == "data_root" else v) for k, v in vars(args).items()},
        "exact": part_exact(args),
        "mnist_vae": None if args.skip_vae else part_vae(args),
        "load_average": list(os.getloadavg()),
        "environment": environment(),
        "wall_seconds": time.perf_counter() - t0,
    }
    write_json(RESULTS / f"{args.name}.json", result)


if __name__ == "__main__":
    main()
