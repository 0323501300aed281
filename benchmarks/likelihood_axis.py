"""One likelihood axis for GANs and VAEs (issue 14, item 4; Wu et al. 2017).

Data: MNIST under ``--data-root`` (skipped without it), the training file split once by
``load_dataset("mnist", val_fraction=0.1, seed=--seed)``: the models train on the 90 %
training split only; the held-out 10 % (validation split) chooses ``sigma``; the test
images are the first ``--n-test`` of the official test set (grey, in [0, 1]).

Models (``--models``, each trained once and cached under ``--cache``, default
``$TMPDIR/ppl_gen_likelihood_axis``; ``--retrain`` ignores the cache):

* ``vae``: 784-200-20 Bernoulli decoder, amortised Gaussian encoder (200), ``--vae-epochs``
  epochs of ``ppl_gen.train`` on dynamically binarised images;
* ``dcgan``: ngf = ndf = 32, z of 64, vanilla loss, batch 64 (``gan_stages``), ``--gan-epochs``;
* ``stylegan``: the style-based generator (``ppl_gen.gan.stylegan``, DCGAN discriminator,
  same settings except ngf 16 and the generator's Adam step 1e-3: the settings of
  ``stylegan_vs_dcgan.py``), ``--gan-epochs``.

Each generator ``G`` (the VAE: its decoder's Bernoulli means) is put in
``p(x | z) = N(G(z), sigma^2 I)`` (:mod:`ppl_gen.infer.generator_likelihood`).  ``sigma``:
a coarse grid (``--sigmas``, AIS-``--coarse-steps`` on ``--n-coarse`` validation images),
then a grid of ratio ``2^(1/4)`` around its best (AIS-``--val-steps`` on ``--n-val``
validation images), extended while the best is at its edge.  Test: forward AIS from the
prior, ``--steps`` / ``--chains`` / ``--leapfrog``; per-image estimates are kept so that rows
can be compared image by image (paired differences, in nats per image).  Checks: the same
estimate with ``--check-steps`` on the first ``--n-check`` test images (schedule length), BDMC
(``ppl_gen.infer.bdmc``) on ``--bdmc-n`` images simulated from the model at the chosen
``sigma`` (its gap bounds the AIS error on such data), a MAP fit of ``z`` to ``--n-map`` test
images (how well ``G`` can reproduce them: per-pixel squared error), and FD-LeNet (10,000
samples against the 10,000 test images) when the LeNet judge is cached.

Rows are merged into ``benchmarks/results/<--name>.json`` by model name, so one model can be
rerun (``--models stylegan``) without the others.

``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/likelihood_axis.py [--models vae,dcgan]
[--quick] [--data-root DIR]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import ppl_gen  # noqa: F401

# isort: split
import torch
from gan_stages import benchmark_config
from plain_vae import DEFAULT_DATA_ROOT, REPO, RESULTS, environment
from repo_paths import shown
from torch import nn

from ppl_gen.core.io import torch_save, write_text
from ppl_gen.data.datasets import load_dataset
from ppl_gen.data.images import ImageData
from ppl_gen.infer.ais import evaluate_ais
from ppl_gen.infer.bdmc import bdmc
from ppl_gen.infer.generator_likelihood import from_generator, from_vae_decoder, select_sigma

MODELS = ("vae", "dcgan", "stylegan")
FINE_RATIO = 2**0.25


class DecoderAsGenerator(nn.Module):
    """A VAE decoder's means as a GAN-style generator (images in [-1, 1]) for the metrics."""

    num_classes = None

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae, self.latent_dim = vae, vae.latent_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        mean = self.vae.likelihood.mean(self.vae.decoder(z))
        return (2 * mean - 1).reshape(z.shape[0], 1, 28, 28)


def build_vae():
    from ppl_gen.guides import AmortisedGaussianGuide

    model = ppl_gen.LatentVariableModel(20, ppl_gen.mlp(20, [200], 784), 784)
    return model, AmortisedGaussianGuide(model, hidden=(200,))


def get_vae(args, cache: Path) -> tuple[nn.Module, dict]:
    """The VAE, trained on the binarised training split (cached state dict)."""
    path = cache / f"vae_e{args.vae_epochs}_n{args.n_train}_s{args.seed}.pt"
    torch.manual_seed(args.seed)
    model, guide = build_vae()
    if path.exists() and not args.retrain:
        saved = torch.load(path, weights_only=True)
        model.load_state_dict(saved["model"])
        return model.eval(), {**saved["info"], "cached": True}
    if args.fd_only or args.sigma_check:
        raise SystemExit("--fd-only / --sigma-check: the vae is not cached")
    data = load_dataset(
        "mnist",
        args.data_root,
        binarize="dynamic",
        val_fraction=0.1,
        seed=args.seed,
        n_train=args.n_train,
    )
    t0 = time.perf_counter()
    ppl_gen.train(model, guide, data, ppl_gen.TrainConfig(epochs=args.vae_epochs, batch_size=100))
    info = {
        "epochs": args.vae_epochs,
        "n_train": int(data.train.shape[0]),
        "seconds": time.perf_counter() - t0,
    }
    torch_save(path, {"model": model.state_dict(), "info": info})
    return model.eval(), {**info, "cached": False}


def get_generator(kind: str, train_images: torch.Tensor, args, cache: Path):
    """A GAN generator trained on the grey training split (cached checkpoint)."""
    from ppl_gen.core.checkpoint import load_checkpoint
    from ppl_gen.gan.trainer import load_generator, train_gan

    tag = "_ngf16_glr1e-3" if kind == "stylegan" else ""
    out = cache / f"{kind}{tag}_e{args.gan_epochs}_n{args.n_train}_s{args.seed}"
    ckpt, info_path = out / "checkpoint.pt", out / "info.json"
    cached = ckpt.exists() and info_path.exists() and not args.retrain
    if not cached and (args.fd_only or args.sigma_check):
        raise SystemExit(f"--fd-only / --sigma-check: the {kind} is not cached")
    if not cached:
        config = benchmark_config(kind, args.gan_epochs, f"likelihood_axis_{kind}")
        config.out = str(out)
        if kind == "stylegan":  # the tuned settings of stylegan_vs_dcgan.py
            config.ngf, config.g_lr = 16, 1e-3
        t0 = time.perf_counter()
        train_gan(ImageData("mnist", train_images.reshape(-1, 1, 28, 28), None, None), config)
        info = {
            "epochs": args.gan_epochs,
            "n_train": int(train_images.shape[0]),
            "seconds": time.perf_counter() - t0,
        }
        write_text(info_path, json.dumps(info))
    info = json.loads(info_path.read_text())
    return load_generator(load_checkpoint(ckpt), "cpu").eval(), {**info, "cached": cached}


def choose_sigma(model, x_val: torch.Tensor, args) -> dict:
    """Coarse grid on ``--n-coarse`` validation images, then a ``2^(1/4)`` grid around its
    best on ``--n-val`` images (extended up to 3 times while the best is at an edge)."""
    ais = {"chains": args.chains, "leapfrog": args.leapfrog, "seed": args.seed}
    t0 = time.perf_counter()
    coarse_grid = [float(s) for s in args.sigmas.split(",")]
    best, coarse = select_sigma(
        model, x_val[: args.n_coarse], coarse_grid, steps=args.coarse_steps, **ais
    )
    fine: dict[float, float] = {}
    grid = [round(best * FINE_RATIO**k, 5) for k in range(-args.fine_points, args.fine_points + 1)]
    for _ in range(4):
        new = [s for s in grid if s not in fine]
        if not new:
            break
        fine.update(select_sigma(model, x_val[: args.n_val], new, steps=args.val_steps, **ais)[1])
        best, ordered = max(fine, key=fine.get), sorted(fine)
        if best == ordered[0]:
            grid = [round(best / FINE_RATIO, 5)]
        elif best == ordered[-1]:
            grid = [round(best * FINE_RATIO, 5)]
        else:
            break
    return {
        "sigma": best,
        "coarse": {str(k): v for k, v in coarse.items()},
        "coarse_steps": args.coarse_steps,
        "n_coarse": int(x_val[: args.n_coarse].shape[0]),
        "fine": {str(k): fine[k] for k in sorted(fine)},
        "fine_steps": args.val_steps,
        "n_val": int(x_val[: args.n_val].shape[0]),
        "at_edge": best in (min(fine), max(fine)),
        "seconds": time.perf_counter() - t0,
    }


def ais_row(model, x: torch.Tensor, steps: int, args) -> dict:
    est = evaluate_ais(
        model, x, steps=steps, chains=args.chains, leapfrog=args.leapfrog, seed=args.seed
    )
    return {
        "mean": est.mean,
        "se": est.se,
        "mc_se": est.mc_se,
        "steps": steps,
        "chains": args.chains,
        "leapfrog": args.leapfrog,
        "n": int(x.shape[0]),
        "acceptance": float(est.acceptance.mean()),
        "seconds": est.seconds,
        "log_px": [round(float(v), 3) for v in est.log_px],
        "log_px_mc_se": [round(float(v), 3) for v in est.log_px_se],
    }


def map_fit(model, x: torch.Tensor, args) -> dict:
    """Maximise ``log p(x|z) + log p(z)`` over ``z`` (Adam, 2 restarts) per image: the
    per-pixel squared error ``G`` reaches and the two terms there (nats per image)."""
    gen = torch.Generator().manual_seed(args.seed)
    n, d, s = x.shape[0], model.data_dim, model.sigma
    flat = x.reshape(n, -1)
    z = torch.randn(2, n, model.latent_dim, generator=gen).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.05)
    for p in model.nets.parameters():
        p.requires_grad_(False)
    t0 = time.perf_counter()
    for _ in range(args.map_steps):
        mean = model.mean_fn(z.reshape(-1, model.latent_dim)).reshape(2, n, d)
        sq = ((flat - mean) ** 2).sum(-1)
        loss = (sq / (2 * s * s) + 0.5 * (z * z).sum(-1)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        mean = model.mean_fn(z.reshape(-1, model.latent_dim)).reshape(2, n, d)
        sq = ((flat - mean) ** 2).sum(-1)
        obj = sq / (2 * s * s) + 0.5 * (z * z).sum(-1)
        pick = obj.argmin(0)
        sq, zz = sq.gather(0, pick[None])[0], (z * z).sum(-1).gather(0, pick[None])[0]
    log_lik = -sq / (2 * s * s) - d * math.log(s * math.sqrt(2 * math.pi))
    log_prior = -0.5 * zz - 0.5 * model.latent_dim * math.log(2 * math.pi)
    return {
        "n": n,
        "steps": args.map_steps,
        "mse_per_pixel": float(sq.mean() / d),
        "log_lik_at_map": float(log_lik.mean()),
        "log_prior_at_map": float(log_prior.mean()),
        "seconds": time.perf_counter() - t0,
    }


def sample_stats(generator: nn.Module, test_images: torch.Tensor, n_samples: int) -> dict:
    """FD-LeNet (when the judge is cached) and the share of grey pixels (0.1 < v < 0.9)."""
    from ppl_gen.metrics.classifier import default_classifier_path, load_classifier
    from ppl_gen.metrics.generative import FDLeNet, sample_images

    fake = sample_images(generator, n_samples, seed=0)
    out = {
        "grey_fraction_samples": float(((fake > 0.1) & (fake < 0.9)).float().mean()),
        "grey_fraction_test": float(((test_images > 0.1) & (test_images < 0.9)).float().mean()),
        "fd_lenet": None,
    }
    if default_classifier_path().exists():
        judge = load_classifier(None, "cpu")
        out["fd_lenet"] = FDLeNet(judge, test_images).fd(fake)
        out["judge"] = shown(default_classifier_path())
        out["judge_sha256"] = judge.weights_sha256
    return out


def evaluate_model(name, model, generator, x_val, test_images, args) -> dict:
    x_test = test_images[: args.n_test]
    row: dict = {"model": name}
    row["sigma"] = choose_sigma(model, x_val, args)
    sigma = row["sigma"]["sigma"]
    print(f"{name}: sigma {sigma} ({row['sigma']['seconds']:.0f} s): {row['sigma']}", flush=True)
    fitted = model.with_sigma(sigma)
    row["test"] = ais_row(fitted, x_test, args.steps, args)
    t = row["test"]
    print(
        f"{name}: test AIS-{args.steps} {t['mean']:.1f} ± {t['se']:.1f} over {t['n']} images"
        f" (MC ± {t['mc_se']:.2f}; {t['seconds']:.0f} s)",
        flush=True,
    )
    if args.n_check:
        long = ais_row(fitted, x_test[: args.n_check], args.check_steps, args)
        short = torch.tensor(t["log_px"][: args.n_check])
        change = torch.tensor(long["log_px"]) - short
        long["short_mean_same_images"] = float(short.mean())
        long["change_mean"] = float(change.mean())
        long["change_se"] = (
            float(change.std() / math.sqrt(len(change))) if len(change) > 1 else None
        )
        row["check"] = long
        print(
            f"{name}: AIS-{args.check_steps} on {args.n_check}: {long['mean']:.1f} vs "
            f"AIS-{args.steps} {float(short.mean()):.1f}: change {long['change_mean']:+.2f}"
            f" ({long['seconds']:.0f} s)",
            flush=True,
        )
    if args.bdmc_n:
        res = bdmc(
            fitted,
            x_test[:1],
            n=args.bdmc_n,
            steps=args.steps,
            chains=args.chains,
            leapfrog=args.leapfrog,
            seed=args.seed,
        )
        row["bdmc"] = res.summary()
        print(
            f"{name}: BDMC-{args.steps} on {args.bdmc_n} simulated: lower "
            f"{res.lower:.1f}, upper {res.upper:.1f}, gap {res.gap:.2f}",
            flush=True,
        )
    if args.n_map:
        row["map"] = map_fit(fitted, x_test[: args.n_map], args)
        print(f"{name}: MAP fit: {row['map']}", flush=True)
    row["samples"] = sample_stats(generator, test_images, args.n_samples)
    print(f"{name}: samples: {row['samples']}", flush=True)
    return row


def check_sigmas(model, test_images: torch.Tensor, row: dict, args) -> dict:
    """Long-schedule AIS at other sigmas on the row's check images, paired with its check."""
    base = row["check"]
    n = min(args.n_check, base["n"])
    out = {"steps": args.check_steps, "n": n, "chosen": row["sigma"]["sigma"], "sigmas": {}}
    out["sigmas"][str(out["chosen"])] = {"mean": float(torch.tensor(base["log_px"][:n]).mean())}
    for sigma in (float(v) for v in args.sigma_check.split(",")):
        res = ais_row(model.with_sigma(sigma), test_images[:n], args.check_steps, args)
        diff = torch.tensor(res["log_px"]) - torch.tensor(base["log_px"][:n])
        res["minus_chosen_mean"] = float(diff.mean())
        res["minus_chosen_se"] = float(diff.std() / math.sqrt(n)) if n > 1 else None
        out["sigmas"][str(sigma)] = res
        print(
            f"{row['model']}: AIS-{args.check_steps} on {n} at sigma {sigma}: {res['mean']:.1f}"
            f", minus sigma {out['chosen']}: {res['minus_chosen_mean']:+.1f} ± "
            f"{res['minus_chosen_se'] or math.nan:.1f} ({res['seconds']:.0f} s)",
            flush=True,
        )
    return out


def paired(rows: list[dict]) -> list[dict]:
    """``a - b`` per test image for every pair of rows (their common first images)."""
    out = []
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            n = min(a["test"]["n"], b["test"]["n"])
            d = torch.tensor(a["test"]["log_px"][:n]) - torch.tensor(b["test"]["log_px"][:n])
            se = float(d.std() / math.sqrt(n)) if n > 1 else math.nan
            out.append(
                {
                    "a": a["model"],
                    "b": b["model"],
                    "n": n,
                    "mean": float(d.mean()),
                    "se": se,
                    "a_wins": int((d > 0).sum()),
                }
            )
    return out


def merge(path: Path, rows: list[dict]) -> list[dict]:
    old = json.loads(path.read_text()).get("rows", []) if path.exists() else []
    if old and "test" not in old[0]:
        old = []
    new = {r["model"] for r in rows}
    merged = [r for r in old if r["model"] not in new] + rows
    return sorted(merged, key=lambda r: MODELS.index(r["model"]))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=DEFAULT_DATA_ROOT)
    p.add_argument("--models", default="vae,dcgan,stylegan")
    p.add_argument("--cache", default=None)
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--vae-epochs", type=int, default=10)
    p.add_argument("--gan-epochs", type=int, default=3)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--leapfrog", type=int, default=5)
    p.add_argument("--sigmas", default="0.05,0.1,0.2,0.4")
    p.add_argument("--coarse-steps", type=int, default=50)
    p.add_argument("--n-coarse", type=int, default=10)
    p.add_argument("--fine-points", type=int, default=2)
    p.add_argument("--val-steps", type=int, default=100)
    p.add_argument("--n-val", type=int, default=20)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--check-steps", type=int, default=1200)
    p.add_argument("--n-check", type=int, default=10)
    p.add_argument("--bdmc-n", type=int, default=8)
    p.add_argument("--n-map", type=int, default=50)
    p.add_argument("--map-steps", type=int, default=300)
    p.add_argument("--n-samples", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny settings (a smoke run)")
    p.add_argument("--name", default="likelihood_axis")
    p.add_argument(
        "--fd-only",
        action="store_true",
        help="only recompute the sample statistics (FD-LeNet) of the cached --models and "
        "update their rows",
    )
    p.add_argument(
        "--sigma-check",
        default="",
        help="only: AIS---check-steps of the first --n-check test images at these sigmas "
        "(comma-separated) for the cached --models, added to their rows (is the chosen "
        "sigma the best one at the long schedule?)",
    )
    args = p.parse_args()
    if args.quick:
        args.vae_epochs, args.gan_epochs, args.n_train = 1, 1, 1000
        args.steps, args.coarse_steps, args.val_steps, args.check_steps = 10, 5, 5, 20
        args.n_coarse, args.n_val, args.n_test, args.n_check = 3, 3, 5, 3
        args.bdmc_n, args.n_map, args.map_steps, args.n_samples = 3, 3, 10, 500
        args.fine_points = 1
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    if not os.path.isdir(os.path.join(str(args.data_root), "MNIST", "raw")):
        print(f"MNIST not found under {args.data_root}: nothing to rank")
        return
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if unknown := set(names) - set(MODELS):
        raise SystemExit(f"--models: unknown {sorted(unknown)}; choose from {MODELS}")
    cache = Path(args.cache or os.environ.get("TMPDIR") or tempfile.gettempdir())
    cache = cache / "ppl_gen_likelihood_axis" if args.cache is None else cache
    cache.mkdir(parents=True, exist_ok=True)
    grey = load_dataset(
        "mnist", args.data_root, val_fraction=0.1, seed=args.seed, n_train=args.n_train
    )
    x_val, test_images = grey.val.reshape(-1, 1, 28, 28), grey.test.reshape(-1, 1, 28, 28)
    print(
        f"training split {grey.train.shape[0]}, held-out validation {x_val.shape[0]}, "
        f"test {test_images.shape[0]} images",
        flush=True,
    )
    path = RESULTS / f"{args.name}.json"
    rows = []
    for name in names:
        t0, c0 = time.perf_counter(), time.process_time()
        if name == "vae":
            vae, train_info = get_vae(args, cache)
            model, generator = from_vae_decoder(vae), DecoderAsGenerator(vae)
        else:
            generator, train_info = get_generator(name, grey.train, args, cache)
            model = from_generator(generator)
        print(f"{name}: trained {train_info}", flush=True)
        if args.fd_only:
            row = next(r for r in merge(path, []) if r["model"] == name)
            row["samples"] = sample_stats(generator, test_images, args.n_samples)
            print(f"{name}: samples: {row['samples']}", flush=True)
        elif args.sigma_check:
            row = next(r for r in merge(path, []) if r["model"] == name)
            row["sigma_check"] = check_sigmas(model, test_images, row, args)
        else:
            row = {"model": name, "train": train_info}
            row.update(evaluate_model(name, model, generator, x_val, test_images, args))
            row["wall_seconds"] = time.perf_counter() - t0
            row["cpu_seconds"] = time.process_time() - c0
            row["settings"] = {
                k: v for k, v in vars(args).items() if k not in ("data_root", "cache")
            }
        rows.append(row)
        write_results(path, merge(path, rows), names, args, t_start, cpu_start)


def write_results(path: Path, merged: list[dict], names, args, t_start, cpu_start) -> None:
    """Write the merged rows, their ranking and paired differences (atomic)."""
    ranking = sorted(merged, key=lambda r: -r["test"]["mean"])
    payload = {
        "data_root": shown(args.data_root),
        "cache": "$TMPDIR/ppl_gen_likelihood_axis" if args.cache is None else "--cache",
        "split": "load_dataset('mnist', val_fraction=0.1, seed): models train on the "
        "training split; sigma on its held-out validation split; test = official test set",
        "rows": merged,
        "ranking": [r["model"] for r in ranking],
        "paired_differences": paired(merged),
        "load_average": list(os.getloadavg()),
        "environment": environment(),
        "last_run": {
            "models": names,
            "fd_only": args.fd_only,
            "sigma_check": args.sigma_check,
            "wall_seconds": time.perf_counter() - t_start,
            "cpu_seconds": time.process_time() - cpu_start,
        },
    }
    text = json.dumps(payload, indent=1).replace(str(REPO) + "/", "")
    write_text(path, text.replace(str(REPO.parent) + "/", "../") + "\n")
    for pair in payload["paired_differences"]:
        print(
            f"paired {pair['a']} - {pair['b']} on {pair['n']} images: "
            f"{pair['mean']:.1f} ± {pair['se']:.1f}",
            flush=True,
        )
    print(f"wrote {shown(path)}", flush=True)


if __name__ == "__main__":
    main()
