"""The style-based generator against DCGAN at the same training wall time on MNIST.

Both use the DCGAN discriminator (ndf 32) at Adam 2e-4 (0.5, 0.999), the non-saturating GAN
loss, z of 64, batch 64 and the generator EMA (decay 0.999) for samples.  DCGAN's generator
has ngf 32 and Adam 2e-4; the style-based one ``--style-ngf`` (channels 4 / 2 / 1 x ngf at
7 / 14 / 28 pixels, a 4-layer mapping network at 0.01x the learning rate, style mixing
with probability 0.9, equalised learning rate) and Adam ``--style-g-lr`` (its equalised
layers store N(0, 1) weights, so it needs a larger step than DCGAN's plainly initialised
layers; Karras et al. 2019 use 1e-3 to 3e-3).  Each trains on a seeded ``--n-train``
subset of the MNIST training images, one epoch at a time (resuming its checkpoint, so the
run equals an uninterrupted one) until its training time reaches ``--budget`` seconds; then
``--n-samples`` samples are scored against the 10,000 test images with the reference judge
(FD-LeNet; the reference, 10,000 training images, from ``results/judge.json``; mode
coverage).  The style-mixing figure of the final style-based generator is copied to
``results/stylegan_vs_dcgan_mixing.png``.  One seed; 1 CPU thread.

``.venv/bin/python benchmarks/stylegan_vs_dcgan.py [--budget 150] [--n-train 5000]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import ppl_gen  # noqa: F401

# isort: split
import torch
from gan_stabilisers import score
from judge import fd_reference_points
from plain_vae import DEFAULT_DATA_ROOT, RESULTS, environment, write_json

from ppl_gen.data.images import load_images
from ppl_gen.gan.trainer import GANConfig, train_gan
from ppl_gen.jobs.train_stylegan import write_style_mixing_figure
from ppl_gen.metrics.classifier import load_classifier
from ppl_gen.metrics.generative import FDLeNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--budget", type=float, default=150.0, help="training seconds each")
    parser.add_argument("--n-samples", type=int, default=5000)
    parser.add_argument("--style-ngf", type=int, default=16)
    parser.add_argument("--style-g-lr", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    judge = load_classifier(None, "cpu")
    reference = fd_reference_points(judge, args.data_root)["train_10k_vs_test"]
    data = load_images("mnist", args.data_root, n=args.n_train, seed=0)
    fd = FDLeNet(judge, load_images("mnist", args.data_root, split="test").images)
    rows = []
    base = Path(os.environ.get("TMPDIR", "/tmp")) / "ppl_gen_bench"
    for model, ngf, g_lr in (("dcgan", 32, None), ("stylegan", args.style_ngf, args.style_g_lr)):
        out = base / f"svd_{model}"
        shutil.rmtree(out, ignore_errors=True)
        config = GANConfig(
            model=model, latent_dim=64, ngf=ngf, ndf=32, epochs=1000, ema=0.999, g_lr=g_lr,
            device="cpu", progress=False, out=str(out), check_collapse=False,
        )  # fmt: skip
        result = train_gan(data, config, stop_after=1)
        while result.seconds < args.budget:
            result = train_gan(data, config, resume=True, stop_after=1)
        row = {
            "model": model,
            "ngf": ngf,
            "g_lr": g_lr or config.lr,
            "epochs": result.epochs,
            "train_seconds": result.seconds,
            "generator_parameters": sum(p.numel() for p in result.generator.parameters()),
        }
        row.update(score(result.sampler, judge, fd, args.n_samples))
        rows.append(row)
        print(
            f"{model:8s} {result.epochs} epochs ({result.seconds:.0f} s): FD-LeNet "
            f"{row['fd_lenet']:.2f}, classes {row['classes_covered']}/10, KL "
            f"{row['kl_to_uniform']:.3f}",
            flush=True,
        )
        shutil.copy(
            out / f"samples_epoch_{result.epochs:03d}.png",
            RESULTS / f"stylegan_vs_dcgan_{model}.png",
        )
        if model == "stylegan":
            write_style_mixing_figure(result.sampler, RESULTS / "stylegan_vs_dcgan_mixing.png")
    write_json(
        RESULTS / "stylegan_vs_dcgan.json",
        {
            "judge_sha256": judge.weights_sha256,
            "n_train": args.n_train,
            "budget_seconds": args.budget,
            "n_samples": args.n_samples,
            "fd_reference_train_10k_vs_test": reference,
            "rows": rows,
            "load_average": os.getloadavg(),
            "environment": environment(),
            "wall_seconds": time.perf_counter() - t0,
        },
    )


if __name__ == "__main__":
    main()
