"""One likelihood axis for GANs and VAEs (issue 14, item 4; Wu et al. 2017).

Trained on the 14,262 MNIST training images (``--data-root``, skipped without MNIST):

* a VAE: 784-200-20 Bernoulli decoder, amortised Gaussian encoder (200), ``--vae-epochs``
  epochs of ``ppl_gen.train`` on dynamically binarised images;
* a DCGAN (ngf = ndf = 32, z of 64, vanilla loss, batch 64: the settings of
  ``dcgan_fd.py``), ``--gan-epochs`` epochs;
* the style-based generator (``ppl_gen.gan.stylegan``, DCGAN discriminator, same settings),
  ``--gan-epochs`` epochs, when the module exists.

Each generator ``G`` (for the VAE: its decoder's Bernoulli means) is put in the Gaussian
observation model ``p(x | z) = N(G(z), sigma^2 I)`` on grey images in [0, 1]
(:mod:`ppl_gen.infer.generator_likelihood`); ``sigma`` is chosen from ``--sigmas`` by a short
AIS (``--val-steps``) on the first ``--n-val`` training images (the models were trained on
them: a one-number choice, not a held-out fit); the test log-likelihood is forward AIS from
the prior with ``--steps`` steps and ``--chains`` chains on the first ``--n-test`` test
images (nats per image: a density over continuous pixel values, comparable only between
models on the same images).  FD-LeNet (10,000 samples against the 10,000 test images;
``ppl_gen.metrics``) is reported beside it when the LeNet judge is cached (``ppl-gen train
classifier --data-root DIR``), else ``null``.

``.venv/bin/python benchmarks/likelihood_axis.py [--quick] [--data-root DIR]``
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time

import ppl_gen  # noqa: F401

# isort: split
import torch
from gan_stages import benchmark_config
from plain_vae import DEFAULT_DATA_ROOT, RESULTS, environment, load_mnist, write_json
from repo_paths import shown
from torch import nn

from ppl_gen.data.images import load_images
from ppl_gen.gan.trainer import load_generator, train_gan
from ppl_gen.infer.generator_likelihood import (
    from_generator,
    from_vae_decoder,
    generator_log_likelihood,
)


class DecoderAsGenerator(nn.Module):
    """A VAE decoder's means as a GAN-style generator (images in [-1, 1]) for the metrics."""

    num_classes = None

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae, self.latent_dim = vae, vae.latent_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        mean = self.vae.likelihood.mean(self.vae.decoder(z))
        return (2 * mean - 1).reshape(z.shape[0], 1, 28, 28)


def train_vae(args):
    from ppl_gen.guides import AmortisedGaussianGuide

    data = load_mnist(args.data_root)
    torch.manual_seed(args.seed)
    model = ppl_gen.LatentVariableModel(20, ppl_gen.mlp(20, [200], 784), 784)
    guide = AmortisedGaussianGuide(model, hidden=(200,))
    t0 = time.perf_counter()
    ppl_gen.train(model, guide, data, ppl_gen.TrainConfig(epochs=args.vae_epochs, batch_size=100))
    return model.eval(), time.perf_counter() - t0


def train_generator(kind: str, images, args):
    config = benchmark_config(kind, args.gan_epochs, f"likelihood_axis_{kind}")
    t0 = time.perf_counter()
    train_gan(images, config)
    seconds = time.perf_counter() - t0
    from ppl_gen.core.checkpoint import load_checkpoint

    return load_generator(load_checkpoint(f"{config.out}/checkpoint.pt"), "cpu"), seconds


def fd_beside(generator: nn.Module, test_images: torch.Tensor, n_samples: int) -> dict | None:
    from ppl_gen.metrics.classifier import default_classifier_path, load_classifier
    from ppl_gen.metrics.generative import FDLeNet, sample_images

    if not default_classifier_path().exists():
        return None
    judge = load_classifier(None, "cpu")
    fd = FDLeNet(judge, test_images).fd(sample_images(generator, n_samples, seed=0))
    return {"fd_lenet": fd, "judge": shown(default_classifier_path())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=DEFAULT_DATA_ROOT)
    parser.add_argument("--vae-epochs", type=int, default=10)
    parser.add_argument("--gan-epochs", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--leapfrog", type=int, default=5)
    parser.add_argument("--val-steps", type=int, default=30)
    parser.add_argument("--n-val", type=int, default=20)
    parser.add_argument("--n-test", type=int, default=20)
    parser.add_argument("--sigmas", default="0.05,0.1,0.2")
    parser.add_argument("--n-samples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke run)")
    parser.add_argument("--name", default="likelihood_axis")
    args = parser.parse_args()
    if args.quick:
        args.vae_epochs, args.gan_epochs, args.n_train = 1, 1, 1000
        args.steps, args.val_steps, args.n_val, args.n_test, args.n_samples = 10, 5, 5, 5, 500
    sigmas = tuple(float(s) for s in args.sigmas.split(","))
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    root = str(args.data_root)
    if not os.path.isdir(os.path.join(root, "MNIST", "raw")):
        print(f"MNIST not found under {root}: nothing to rank")
        return
    train = load_images("mnist", root, split="train", n=args.n_train)
    test = load_images("mnist", root, split="test")
    x_val, x_test = train.images[: args.n_val], test.images[: args.n_test]
    kinds = ["dcgan"]
    stylegan = importlib.util.find_spec("ppl_gen.gan.stylegan") is not None
    if stylegan:
        kinds.append("stylegan")
    rows = []
    vae, vae_seconds = train_vae(args)
    candidates = [("vae", from_vae_decoder(vae), DecoderAsGenerator(vae), vae_seconds)]
    for kind in kinds:
        gen, seconds = train_generator(kind, train, args)
        candidates.append((kind, from_generator(gen), gen, seconds))
    for name, model, generator, train_seconds in candidates:
        res = generator_log_likelihood(
            model,
            x_val,
            x_test,
            steps=args.steps,
            chains=args.chains,
            leapfrog=args.leapfrog,
            sigmas=sigmas,
            val_steps=args.val_steps,
            seed=args.seed,
        )
        row = {"model": name, "train_seconds": train_seconds, **res.summary()}
        row["fd"] = fd_beside(generator, test.images, args.n_samples)
        rows.append(row)
        fd = row["fd"]["fd_lenet"] if row["fd"] else float("nan")
        print(
            f"{name}: AIS log p(x) {row['test_log_likelihood']:.1f} ± "
            f"{row['test_log_likelihood_se']:.1f} (MC ± {row['test_log_likelihood_mc_se']:.1f}) "
            f"nats/image at sigma {row['sigma']} (validation {row['sigma_validation']}); "
            f"FD-LeNet {fd:.1f}; AIS {row['seconds']:.0f} s",
            flush=True,
        )
    ranking = sorted(rows, key=lambda r: -r["test_log_likelihood"])
    write_json(
        RESULTS / f"{args.name}.json",
        {
            "settings": {
                k: (shown(v) if k == "data_root" and v else v) for k, v in vars(args).items()
            },
            "stylegan_included": stylegan,
            "rows": rows,
            "ranking": [r["model"] for r in ranking],
            "load_average": list(os.getloadavg()),
            "environment": environment(),
            "wall_seconds": time.perf_counter() - t_start,
        },
    )


if __name__ == "__main__":
    main()
