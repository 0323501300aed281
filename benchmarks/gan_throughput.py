"""Speed target: the DCGAN trainer's step within 1.1x of a minimal hand-written loop over
the same networks; training throughput (images/s) of every adversarial trainer.

* ``dcgan`` trainer (:func:`ppl_gen.gan.trainer.train_gan` on the engine,
  :func:`ppl_gen.engine.fit`: one epoch per round, no output folder) vs a minimal
  hand-written PyTorch loop (the PyTorch DCGAN example's step: D on real and detached
  fakes with BCE-with-logits, then G with the non-saturating loss; Adam 2e-4 (0.5,
  0.999)) over the same networks (same initial weights), the same MNIST images and batch
  size; interleaved rounds, median time ratio trainer / loop.
* images/s of the ``gan`` (MLP 256-512), ``dcgan``, ``cgan`` and ``cyclegan`` trainers
  (CycleGAN counts the images of both domains).

Times are wall-clock seconds of the training loops (the trainer's own ``seconds``: the
engine's step time, which covers its progress bar, shuffling, divergence check and loss
book-keeping).  The machine is shared:
the load average is recorded, and the ratio is what the target is about.

``.venv/bin/python benchmarks/gan_throughput.py [--data-root DIR] [--rounds 5] [--n 3200]``
(``--quick``: 2 rounds (unless ``--rounds``) of 640 images, 128 CycleGAN images, results in
``gan_throughput_quick.json``, for checking that the script works.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import ppl_gen  # noqa: F401

# isort: split
import torch
from plain_vae import DEFAULT_DATA_ROOT, REPO, RESULTS, environment, write_json
from torch.nn import functional as F

from ppl_gen.data.images import load_images, to_tanh_range
from ppl_gen.gan.cycle_trainer import CycleGANConfig, train_cyclegan
from ppl_gen.gan.trainer import GANConfig, build_gan, train_gan


def plain_dcgan_epoch(config: GANConfig, images: torch.Tensor, seed: int) -> float:
    """The hand-written loop: one epoch over ``images`` (N, 1, 28, 28) in [0, 1]; seconds."""
    torch.manual_seed(config.seed)
    g, d = build_gan(config, tuple(images.shape[1:]))  # same initial weights as the trainer
    betas = (config.beta1, config.beta2)
    opt_g = torch.optim.Adam(g.parameters(), lr=config.lr, betas=betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=config.lr, betas=betas)
    x = to_tanh_range(images)
    n, b = x.shape[0], config.batch_size
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    perm = torch.randperm(n, generator=gen)
    for i in range(n // b):
        real = x[perm[i * b : (i + 1) * b]]
        fake = g(torch.randn(b, config.latent_dim, generator=gen))
        out_real, out_fake = d(real), d(fake.detach())
        loss_d = F.binary_cross_entropy_with_logits(
            out_real, torch.ones_like(out_real)
        ) + F.binary_cross_entropy_with_logits(out_fake, torch.zeros_like(out_fake))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        out = d(fake)
        loss_g = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--bsds-root", type=Path, default=REPO.parent / "shared/data/bsds500/train")
    parser.add_argument("--rounds", type=int, default=None, help="default 5 (quick: 2)")
    parser.add_argument("--n", type=int, default=3200, help="images per round (dcgan)")
    parser.add_argument("--quick", action="store_true", help="small check run (see docs)")
    args = parser.parse_args()
    n_cycle = 640
    if args.quick:
        args.n, n_cycle = 640, 128
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    t_start = time.perf_counter()
    data = load_images("mnist", args.data_root, n=args.n, seed=0)
    base = dict(
        latent_dim=64, ngf=32, ndf=32, batch_size=64, epochs=1, device="cpu", progress=False
    )
    config = GANConfig(model="dcgan", **base)
    imgs = data.images.shape[0] // config.batch_size * config.batch_size
    # warm-up (allocator, first-call overheads) for both
    train_gan(data, config)
    plain_dcgan_epoch(config, data.images, 0)
    rounds = []
    for r in range(args.rounds):
        trainer_s = train_gan(data, GANConfig(model="dcgan", seed=r, **{**base})).seconds
        plain_s = plain_dcgan_epoch(GANConfig(model="dcgan", seed=r, **base), data.images, r)
        rounds.append(
            {"trainer_seconds": trainer_s, "plain_seconds": plain_s, "ratio": trainer_s / plain_s}
        )
        print(
            f"round {r + 1}: trainer {imgs / trainer_s:.0f} images/s, hand-written loop "
            f"{imgs / plain_s:.0f} images/s, ratio {trainer_s / plain_s:.3f}"
        )
    ratio = statistics.median(x["ratio"] for x in rounds)
    print(f"DCGAN trainer / hand-written loop: median time ratio {ratio:.3f} (target <= 1.1)")
    throughput = {}
    for model, extra in (("gan", {"hidden": (256, 512)}), ("dcgan", {}), ("cgan", {})):
        res = train_gan(data, GANConfig(model=model, **{**base, **extra}))
        throughput[model] = res.history["images_per_second"][-1]
    a = load_images("mnist", args.data_root, n=n_cycle, seed=0, channels=3)
    b = load_images("mnistm", args.data_root, n=n_cycle, seed=1, bsds_root=args.bsds_root)
    cyc = CycleGANConfig(
        epochs=1,
        decay_epochs=0,
        batch_size=32,
        ngf=16,
        ndf=16,
        n_blocks=2,
        device="cpu",
        progress=False,
    )
    throughput["cyclegan"] = train_cyclegan(a, b, cyc).history["images_per_second"][-1]
    for k, v in throughput.items():
        print(f"{k:9s} {v:8.0f} images/s")
    write_json(
        RESULTS / ("gan_throughput_quick.json" if args.quick else "gan_throughput.json"),
        {
            "images_per_round": imgs,
            "dcgan_config": {k: v for k, v in base.items()},
            "rounds": rounds,
            "median_ratio": ratio,
            "target_met": ratio <= 1.1,
            "images_per_second": throughput,
            "cyclegan_config": {"ngf": 16, "ndf": 16, "n_blocks": 2, "batch_size": 32},
            "load_average": os.getloadavg(),
            "threads": torch.get_num_threads(),
            "environment": environment(),
            "wall_seconds": time.perf_counter() - t_start,
        },
    )


if __name__ == "__main__":
    main()
