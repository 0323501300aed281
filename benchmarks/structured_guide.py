"""Structured vs mean-field-over-sites guide on a two-stochastic-layer VAE, MNIST.

Model (Burda et al. 2016, sec. 5, the two-layer architecture, narrower):
``z2 ~ N(0, I_{Z2})``, ``z1 | z2 ~ N(mu(z2), diag s(z2)^2)``, ``x | z1 ~ Bernoulli(f(z1))``
with tanh MLPs, written as an ordinary hand-written Pyro model.  Guides, same encoder
widths, same training budget (epochs, batch size, Adam learning rate, ``Trace_ELBO``):

* ``structured``: :class:`ppl_gen.guides.StructuredAmortisedGuide`, q(z1 | x) q(z2 | z1, x),
  built from the model's trace;
* ``mean-field``: :class:`ppl_gen.guides.AmortisedGaussianGuide`, q(z1 | x) q(z2 | x).

Reports test ELBO and IWAE-K (nats per image, ``ppl_gen.evaluate_bounds``) for both and
writes ``benchmarks/results/structured_guide.json``.  MNIST is read from
``../shared/data`` (``--root``); without it the script says so and exits 0.

``.venv/bin/python benchmarks/structured_guide.py [--epochs 5] [--n-train 10000]
[--n-test 200] [--k 5000]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import ppl_gen

# isort: split
import pyro
import pyro.distributions as dist
import torch
from repo_paths import shown
from torch import nn
from torch.nn import functional as F

from ppl_gen.core.io import write_json
from ppl_gen.guides import AmortisedGaussianGuide, StructuredAmortisedGuide

RESULTS = Path(__file__).parent / "results"


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, n_out))


class TwoLayerVAE(nn.Module):
    """``z2 -> z1 -> x``; sites ``z2 (Z2,)``, ``z1 (Z1,)``, ``x (784,)`` in the data plate."""

    def __init__(self, data_dim: int = 784, z1: int = 32, z2: int = 16, hidden: int = 200):
        super().__init__()
        self.z1, self.z2 = z1, z2
        self.prior1 = _mlp(z2, hidden // 2, 2 * z1)
        self.decoder = _mlp(z1, hidden, data_dim)

    def forward(self, x, indices=None, size=None):
        pyro.module("two_layer_vae", self)
        with ppl_gen.data_plate(x, indices, size):
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(self.z2), 1.0).to_event(1))
            loc, raw = self.prior1(z2).chunk(2, dim=-1)
            z1 = pyro.sample("z1", dist.Normal(loc, 1e-3 + F.softplus(raw)).to_event(1))
            logits = self.decoder(z1)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)


def run(args) -> dict:
    data = ppl_gen.load_dataset(
        "mnist", root=str(Path(args.root) / "mnist"), binarize="dynamic", seed=args.seed,
        n_train=args.n_train, n_test=args.n_test,
    )  # fmt: skip
    rows = {}
    for name in ("structured", "mean-field"):
        torch.manual_seed(args.seed)
        model = TwoLayerVAE()
        if name == "structured":
            guide = StructuredAmortisedGuide(model, hidden=(200,), site_hidden=(100,))
        else:
            guide = AmortisedGaussianGuide(model, hidden=(200,))
        config = ppl_gen.TrainConfig(
            epochs=args.epochs, batch_size=100, lr=1e-3, elbo="trace", val_every=0,
            progress=False, seed=args.seed, device="cpu",
        )  # fmt: skip
        t0 = time.perf_counter()
        result = ppl_gen.train(model, guide, data, config)
        train_s = time.perf_counter() - t0
        pyro.set_rng_seed(args.seed)
        t0 = time.perf_counter()
        bounds = ppl_gen.evaluate_bounds(model, guide, data.test, k=args.k)
        rows[name] = {
            "train_elbo": result.history["train_elbo"][-1],
            **bounds.summary(),
            "train_seconds": train_s,
            "eval_seconds": time.perf_counter() - t0,
        }
        print(
            f"{name:>10}: test ELBO {bounds.elbo_mean:.2f} ± {bounds.elbo_se:.2f}, "
            f"IWAE-{args.k} {bounds.iwae_mean:.2f} ± {bounds.iwae_se:.2f} nats/image "
            f"(train {train_s:.0f} s)",
            flush=True,
        )
    settings = {k: (shown(v) if k in ("root", "out") else v) for k, v in vars(args).items()}
    return {"settings": settings, "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).parents[1] / ".." / "shared" / "data"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "structured_guide.json"))
    args = parser.parse_args()
    if not (Path(args.root) / "mnist").exists():  # torchvision layout: <root>/mnist/MNIST/raw
        print(f"skipped: MNIST not found under {shown(args.root)} (see shared/data/README.md)")
        return 0
    torch.set_num_threads(2)
    out = run(args)
    write_json(args.out, out)
    print(f"wrote {shown(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
