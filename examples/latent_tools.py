"""Latent-space tools on the 8x8 digits: one interface for a VAE, a denoising autoencoder
and a conditional VAE.

Trains three small models on scikit-learn's digits (no download), wraps each as an
``EncoderDecoder`` and runs every tool on it: slerp interpolation, the 4-corner grid, the
2-D manifold, an attribute vector (digit class 0 and stroke thickness), t-SNE and the latent
scatter, reconstructions, the denoising before/after view, samples of the autoencoder used
as a generator (a full-covariance Gaussian on its training codes) and class-conditional
CVAE samples.  Figures (``.png``) and arrays (``.npz``) go to ``runs/latent_example/``.

Run:  python examples/latent_tools.py   (about a minute on 2 CPU cores)
"""

from pathlib import Path

import torch

import ppl_gen
from ppl_gen.autoencoders import (
    MLPAutoencoder,
    fit_latent_gaussian,
    sample_decoded,
    train_autoencoder,
    variant_config,
)
from ppl_gen.autoencoders.conditional import sample_classes, train_cvae
from ppl_gen.engine import seed_everything
from ppl_gen.guides import AmortisedGaussianGuide
from ppl_gen.jobs import latent as jobs
from ppl_gen.latent import EncoderDecoder
from ppl_gen.models import VAE
from ppl_gen.viz import report as reports

OUT = Path("runs/latent_example")
seed_everything(0)  # Python, NumPy and torch: the networks below start the same every run
binary = ppl_gen.load_dataset("digits", binarize="dynamic", seed=0)
grey = ppl_gen.load_dataset("digits", seed=0)
x, y = grey.test, grey.test_labels

# 1. A VAE with a 2-D latent space: the encoder is the guide's mean.
vae = VAE(64, latent_dim=2, hidden=(128,), image_shape=(8, 8))
guide = AmortisedGaussianGuide(vae, hidden=(128,))
ppl_gen.train(vae, guide, binary, ppl_gen.TrainConfig(epochs=100, batch_size=64, progress=False))
vae_pair = EncoderDecoder(lambda v: guide.encode(v)["z"][0], vae.decode_mean, 2, (8, 8))

# 2. A denoising autoencoder (masking noise), 8-D codes.
dae = MLPAutoencoder(64, latent_dim=8, hidden=(128,), image_shape=(8, 8))
config = variant_config("dae", noise="masking", epochs=100, batch_size=64, progress=False)
train_autoencoder(dae, grey, config)
dae_pair = EncoderDecoder(dae.encode, dae.decode, 8, (8, 8))

# 3. A conditional VAE p(x|z,y)p(z) with q(z|x,y).
cvae = train_cvae(
    binary,
    ppl_gen.TrainConfig(epochs=100, batch_size=64, progress=False),
    latent_dim=2,
    hidden=(128,),
)
cvae_pair = EncoderDecoder(
    lambda v, labels: cvae.guide.encode(v, torch.nn.functional.one_hot(labels, 10).float())[0],
    cvae.model.decode_mean,
    2,
    (8, 8),
    num_classes=10,
)

for name, pair in (("vae", vae_pair), ("dae", dae_pair), ("cvae", cvae_pair)):
    out = OUT / name
    jobs.run_interpolate(pair, out, x, y, index_a=0, index_b=1, steps=10, method="slerp")
    jobs.run_grid(pair, out, x, y, corners=(0, 1, 2, 3), n=8)
    jobs.run_attribute(pair, out, x, y, attribute="thick", n_images=6)
    jobs.run_tsne(pair, out, x, y, perplexity=30)
    jobs.run_reconstruct(pair, out, x, y, n_images=10)
    if pair.latent_dim == 2:
        jobs.run_manifold(pair, out, n=15, label=3 if pair.conditional else None)
    print(f"{name}: figures in {out}/")

jobs.run_attribute(vae_pair, OUT / "vae_class0", x, y, attribute="class:0", n_images=6)
jobs.run_reconstruct(dae_pair, OUT / "dae_denoise", x, y, noise="masking", noise_level=0.4)

with torch.no_grad():  # the autoencoder as a generator
    gaussian = fit_latent_gaussian(dae.encode(grey.train))
    samples, _ = sample_decoded(dae.decode, gaussian, 64)
reports.save_image_panels({"DAE + latent Gaussian": samples}, (8, 8), OUT / "dae_samples.png")
images, _ = sample_classes(cvae.model, range(10), 8)
reports.save_image_panels(
    {"CVAE, one row per class": images}, (8, 8), OUT / "cvae_samples.png", nrow=8
)
print(f"generator samples: {OUT}/dae_samples.png, {OUT}/cvae_samples.png")
