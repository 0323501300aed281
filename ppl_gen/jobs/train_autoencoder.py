"""``ppl-gen train ae|dae|sae|cae`` and ``ppl-gen train cvae`` as job functions: load the
data, seed, build and train the model, then write the figures and ``metrics.json`` into the
output folder and return the summary the command prints.

Files written into ``out`` (under its output lock, :func:`ppl_gen.core.io.output_lock`):

* autoencoders: ``checkpoint.pt`` (every epoch, :func:`ppl_gen.autoencoders.train_autoencoder`),
  ``loss_curves.png``, ``samples.png`` (decoded draws from a full-covariance Gaussian fitted to
  the training codes), ``reconstructions.png`` (10 test images) and ``metrics.json``;
* the CVAE: ``checkpoint.pt`` (:func:`ppl_gen.autoencoders.conditional.train_cvae`),
  ``loss_curves.png``, ``samples.png`` (10 samples per class, one row per class) and
  ``metrics.json``.

The data's ``root`` is stored in the checkpoint as an absolute path, so the latent tools
and ``ppl-gen evaluate`` find the data again from any working directory.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ppl_gen.autoencoders.build import make_autoencoder
from ppl_gen.autoencoders.conditional import sample_classes, train_cvae
from ppl_gen.autoencoders.evaluation import reconstruction_errors
from ppl_gen.autoencoders.generator import fit_latent_gaussian, sample_decoded
from ppl_gen.autoencoders.trainer import train_autoencoder, variant_config
from ppl_gen.core.device import module_device
from ppl_gen.core.errors import require_positive_int
from ppl_gen.core.io import check_output_dir, output_lock, write_json
from ppl_gen.data.datasets import load_dataset
from ppl_gen.engine import seed_everything
from ppl_gen.infer.training import TrainConfig
from ppl_gen.viz import report as reports
from ppl_gen.viz.autoencoders import plot_training_curves

PathLike = str | os.PathLike


def data_spec(name: str, root: PathLike | None, binarize: str, seed: int) -> dict[str, Any]:
    """How the training data was loaded, as stored in checkpoints (``root`` absolute)."""
    return {
        "name": name,
        "root": str(Path(root).expanduser().resolve()) if root is not None else None,
        "binarize": binarize,
        "seed": seed,
    }


@dataclass
class AutoencoderJob:
    """Settings of :func:`run_train_autoencoder` (the options of ``ppl-gen train ae``...).

    Attributes:
        variant: ``ae``, ``dae``, ``sae`` or ``cae`` (:func:`~ppl_gen.autoencoders.variant_config`).
        data, data_root, download, binarize, n_train: the dataset
            (:func:`ppl_gen.data.datasets.load_dataset`).
        arch, latent_dim, hidden, activation, output: the network
            (:func:`ppl_gen.autoencoders.make_autoencoder`).
        noise, noise_level, sparsity, contractive: the regulariser (``None``: the variant's
            default).
        epochs, batch_size, lr, seed, device: training.
        out: output folder (``None``: ``runs/<variant>``).
        resume: continue from ``out/checkpoint.pt``.
        progress: progress bar and per-epoch lines (stderr).
    """

    variant: str = "ae"
    data: str = "digits"
    data_root: PathLike | None = None
    download: bool = False
    binarize: str = "none"
    n_train: int | None = None
    arch: str = "mlp"
    latent_dim: int = 32
    hidden: tuple[int, ...] = (256,)
    activation: str = "relu"
    output: str = "sigmoid"
    noise: str | None = None
    noise_level: float | None = None
    sparsity: float | None = None
    contractive: float | None = None
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    out: PathLike | None = None
    resume: bool = False
    progress: bool = True


def run_train_autoencoder(job: AutoencoderJob) -> dict[str, Any]:
    """Train the autoencoder of ``job`` and write its files (module docs).

    Returns:
        The summary also written to ``metrics.json``: ``checkpoint``, ``variant``, ``epochs``,
        ``iterations``, ``train_seconds`` (s), ``final_train_loss``,
        ``final_val_reconstruction``, ``test_reconstruction`` and its standard error (the
        model's own loss per test image: nats for sigmoid outputs, squared error for linear
        ones, named in ``units``) and the ``history``.

    Raises:
        PplGenError: bad settings (naming the parameter), an unusable ``out``, missing
            data, or a refused resume.
        TrainingDiverged: a non-finite or exploded loss.
    """
    out = Path(job.out if job.out is not None else f"runs/{job.variant}")
    config = variant_config(
        job.variant,
        epochs=job.epochs,
        batch_size=job.batch_size,
        lr=job.lr,
        noise=job.noise,
        noise_level=job.noise_level,
        sparsity=job.sparsity,
        contractive=job.contractive,
        seed=job.seed,
        device=job.device,
        checkpoint=str(out / "checkpoint.pt"),
        progress=job.progress,
    )
    config.validate()
    require_positive_int("latent_dim", job.latent_dim)
    check_output_dir(out, "out")
    splits = load_dataset(
        job.data,
        job.data_root,
        download=job.download,
        binarize=job.binarize,
        seed=job.seed,
        n_train=job.n_train,
    )
    seed_everything(job.seed)
    model = make_autoencoder(
        job.arch,
        splits.data_dim,
        splits.image_shape,
        job.latent_dim,
        job.hidden,
        activation=job.activation,
        output=job.output,
    )
    spec = {
        "variant": job.variant,
        "data": data_spec(job.data, job.data_root, job.binarize, job.seed),
    }
    with output_lock(out):
        result = train_autoencoder(model, splits, config, resume=job.resume, spec=spec)
        units = "nats per datapoint" if model.output == "sigmoid" else "squared error per datapoint"
        plot_training_curves(result.history, out / "loss_curves.png", units)
        device = module_device(model)
        test = splits.test.to(device)
        errors = reconstruction_errors(model, test)
        with torch.no_grad():
            gaussian = fit_latent_gaussian(model.encode(splits.train.to(device)))
            gen = torch.Generator(device=device).manual_seed(job.seed)
            samples, _ = sample_decoded(model.decode, gaussian, 64, gen)
            recon = model.reconstruct(test[:10])
        reports.save_image_panels(
            {"decoded draws from the latent Gaussian": samples},
            splits.image_shape,
            out / "samples.png",
        )
        reports.save_reconstructions(
            test[:10], {job.variant: recon}, splits.image_shape, out / "reconstructions.png"
        )
        summary = {
            "checkpoint": config.checkpoint,
            "variant": job.variant,
            "epochs": result.epochs,
            "iterations": result.iterations,
            "train_seconds": result.seconds,
            "final_train_loss": result.history["train_loss"][-1],
            "final_val_reconstruction": result.history["val_reconstruction"][-1],
            "test_reconstruction": float(errors.mean()),
            "test_reconstruction_se": float(errors.std() / math.sqrt(max(len(errors), 1))),
            "units": units,
            "history": result.history,
        }
        write_json(out / "metrics.json", summary)
    return summary


@dataclass
class CVAEJob:
    """Settings of :func:`run_train_cvae` (the options of ``ppl-gen train cvae``).

    Attributes:
        data, data_root, download, binarize, n_train: the (labelled) dataset.
        latent_dim, hidden, likelihood: the CVAE (:class:`ppl_gen.models.CVAE`).
        epochs, batch_size, lr, elbo, seed, device: training
            (:class:`ppl_gen.infer.training.TrainConfig`).
        out: output folder.
        resume: continue from ``out/checkpoint.pt``.
        progress: progress bar and per-epoch lines (stderr).
    """

    data: str = "digits"
    data_root: PathLike | None = None
    download: bool = False
    binarize: str = "dynamic"
    n_train: int | None = None
    latent_dim: int = 2
    hidden: tuple[int, ...] = (400,)
    likelihood: str = "bernoulli"
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    elbo: str = "analytic-kl"
    seed: int = 0
    device: str = "auto"
    out: PathLike = "runs/cvae"
    resume: bool = False
    progress: bool = True


def run_train_cvae(job: CVAEJob) -> dict[str, Any]:
    """Train the conditional VAE of ``job`` and write its files (module docs).

    Returns:
        The summary also written to ``metrics.json``: ``checkpoint``, ``epochs``,
        ``iterations``, ``train_seconds`` (s), ``final_train_elbo`` and ``final_val_elbo``
        (nats per image, bounds on ``log p(x | y)``) and the ``history``.

    Raises:
        PplGenError: bad settings (naming the parameter), an unusable ``out``, unlabelled or
            missing data, or a refused resume.
        TrainingDiverged: a non-finite or exploded loss.
    """
    out = Path(job.out)
    config = TrainConfig(
        epochs=job.epochs,
        batch_size=job.batch_size,
        lr=job.lr,
        elbo=job.elbo,
        seed=job.seed,
        device=job.device,
        checkpoint=str(out / "checkpoint.pt"),
        progress=job.progress,
    )
    config.validate()
    check_output_dir(out, "out")
    splits = load_dataset(
        job.data,
        job.data_root,
        download=job.download,
        binarize=job.binarize,
        seed=job.seed,
        n_train=job.n_train,
    )
    with output_lock(out):
        fit = train_cvae(
            splits,
            config,
            latent_dim=job.latent_dim,
            hidden=job.hidden,
            likelihood=job.likelihood,
            data_spec=data_spec(job.data, job.data_root, job.binarize, job.seed),
            resume=job.resume,
        )
        history = fit.result.history
        reports.plot_loss_curves({"cvae": history}, out / "loss_curves.png")
        classes = list(range(fit.model.num_classes))
        gen = torch.Generator(device=module_device(fit.model)).manual_seed(job.seed)
        images, _ = sample_classes(fit.model, classes, 10, gen)
        reports.save_image_panels(
            {"samples, one row per class": images},
            fit.model.image_shape,
            out / "samples.png",
            nrow=10,
            row_labels=[f"class {c}" for c in classes],
        )
        summary = {
            "checkpoint": config.checkpoint,
            "epochs": fit.result.epochs,
            "iterations": fit.result.iterations,
            "train_seconds": fit.result.seconds,
            "final_train_elbo": history["train_elbo"][-1],
            "final_val_elbo": history["val_elbo"][-1],
            "units": "nats per image (bound on log p(x|y))",
            "history": history,
        }
        write_json(out / "metrics.json", summary)
    return summary
