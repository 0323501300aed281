"""Paired against unpaired translation: pix2pix and CycleGAN on MNIST <-> MNIST-M.

Both see the same first ``--n-train`` training images of each domain (MNIST-M image ``i``
is MNIST digit ``i`` over a photograph crop).  pix2pix uses the pairs (U-Net ngf 32, 3
levels; PatchGAN ndf 32, 2 layers; vanilla GAN loss + 100 x L1; batch 32; one model per
direction); CycleGAN ignores them (each domain shuffled on its own; the README's MNIST-M
setting: ngf 16, 2 residual blocks, one downsampling, ndf 32, LSGAN, cycle lambda 2.5,
identity 0.5 x lambda, batch 16; MNIST given 3 grey channels; one model for both
directions).  Each trains ``--epochs`` epochs.  Scored on the first ``--n-test`` test
pairs: per-pixel L1 between the translation and the paired ground truth ([0, 1] scale;
CycleGAN's grey output is averaged over its 3 channels for MNIST) and label preservation
(the reference MNIST judge's accuracy on the translations; the judge reads colour by the
channel mean, as ``ppl_gen.metrics.cycle`` does), beside the judge on the raw sources and
the real targets.  For MNIST -> MNIST-M the background crop is random, so part of the L1 is
irreducible.  One seed; 1 CPU thread.

``.venv/bin/python benchmarks/pix2pix_vs_cyclegan.py [--n-train 2000] [--epochs 3]``
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import ppl_gen  # noqa: F401

# isort: split
import torch
from plain_vae import DEFAULT_DATA_ROOT, RESULTS, environment, write_json
from torch import nn

from ppl_gen.data.images import ImageData, with_channels
from ppl_gen.gan.cycle_trainer import CycleGANConfig, train_cyclegan
from ppl_gen.gan.pix2pix_trainer import Pix2PixConfig, train_pix2pix
from ppl_gen.jobs.train_pix2pix import PairSource
from ppl_gen.metrics.classifier import load_classifier
from ppl_gen.metrics.translation import evaluate_translation

BSDS = DEFAULT_DATA_ROOT.parent / "bsds500" / "train"


class GreyIn(nn.Module):
    """A 3-channel CycleGAN generator fed a grey image (channel repeated)."""

    def __init__(self, g: nn.Module) -> None:
        super().__init__()
        self.g = g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.g(x.expand(-1, 3, -1, -1))


class GreyOut(nn.Module):
    """A CycleGAN generator whose 3 grey output channels are averaged to one."""

    def __init__(self, g: nn.Module) -> None:
        super().__init__()
        self.g = g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.g(x).mean(dim=1, keepdim=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    judge = load_classifier(None, "cpu")
    rows = []
    test = {}
    for direction in ("mnistm-to-mnist", "mnist-to-mnistm"):
        pairs = PairSource(direction, str(args.data_root), str(BSDS), args.n_train, args.n_test)
        src, tgt, _ = pairs.load("train")
        test[direction] = pairs.load("test")
        config = Pix2PixConfig(epochs=args.epochs, device="cpu", progress=False)
        result = train_pix2pix(src, tgt, config)
        ts, tt, labels = test[direction]
        scores = evaluate_translation(result.sampler, ts.images, tt.images, labels, judge)
        rows.append({"method": "pix2pix", "direction": direction, **scores,
                     "train_seconds": result.seconds})  # fmt: skip
        print(rows[-1], flush=True)
        if direction == "mnist-to-mnistm":
            mnist, mnistm = src, tgt
    config = CycleGANConfig(
        ngf=16, n_blocks=2, n_down=1, ndf=32, lambda_cycle=2.5, epochs=args.epochs,
        decay_epochs=max(args.epochs // 2, 0), device="cpu", progress=False,
    )  # fmt: skip
    a = with_channels(ImageData("mnist", mnist.images, None, None), 3)
    b = ImageData("mnistm", mnistm.images, None, None)
    cyc = train_cyclegan(a, b, config)
    for direction, g in (
        ("mnistm-to-mnist", GreyOut(cyc.nets["G_BA"])),
        ("mnist-to-mnistm", GreyIn(cyc.nets["G_AB"])),
    ):
        ts, tt, labels = test[direction]
        scores = evaluate_translation(g, ts.images, tt.images, labels, judge)
        rows.append({"method": "cyclegan (unpaired)", "direction": direction, **scores,
                     "train_seconds": cyc.seconds})  # fmt: skip
        print(rows[-1], flush=True)
    write_json(
        RESULTS / "pix2pix_vs_cyclegan.json",
        {
            "judge_sha256": judge.weights_sha256,
            "n_train": args.n_train,
            "n_test": args.n_test,
            "epochs": args.epochs,
            "rows": rows,
            "load_average": os.getloadavg(),
            "environment": environment(),
            "wall_seconds": time.perf_counter() - t0,
        },
    )


if __name__ == "__main__":
    main()
