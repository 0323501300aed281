"""The ``ppl-gen train vae`` job: build a VAE and its guide from a seed, fit them by SVI
(:func:`ppl_gen.infer.training.train`), and write ``checkpoint.pt``, ``metrics.json`` and
``loss_curves.png`` into ``out``.

The same configuration twice gives identical weights: every random stream is seeded
(:func:`ppl_gen.engine.seed_everything`) before the networks are built, and training seeds
the rest from ``seed``.  Under ``torchrun`` every rank runs the job; rank 0 alone writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppl_gen.core.distributed import DistributedContext, init_from_env
from ppl_gen.core.errors import PplGenError
from ppl_gen.core.io import check_output_dir, output_lock, write_json
from ppl_gen.data.datasets import load_dataset
from ppl_gen.engine import seed_everything
from ppl_gen.infer.training import TrainConfig, train
from ppl_gen.lvm.builders import MODELS, ModelSpec, build_guide, build_model
from ppl_gen.viz import report as reports

#: Guides ``train vae`` builds (:func:`ppl_gen.lvm.builders.build_guide`).
VAE_GUIDES = ("amortised", "mean-field")


@dataclass
class TrainVAEConfig:
    """Settings of :func:`run_train_vae` (the ``ppl-gen train vae`` options).

    Attributes:
        data, data_root, download: the dataset (:func:`ppl_gen.data.datasets.load_dataset`).
        model: ``vae`` (MLP) or ``conv-vae`` (28x28 images).
        epochs, batch_size, lr, elbo, objective, k, estimator, precision, deterministic,
            device, seed: see :class:`~ppl_gen.infer.training.TrainConfig`.
        latent_dim: latent dimension Z.
        hidden: hidden widths of the decoder and encoder.
        likelihood: ``bernoulli``, ``gaussian``, ``laplace`` or ``student-t``.
        binarize: ``dynamic``, ``static`` or ``none``.
        guide: ``amortised`` or ``mean-field``.
        n_train: use only the first ``n_train`` training images (``None``: all).
        out: output folder (``checkpoint.pt``, ``metrics.json``, ``loss_curves.png``).
        resume: continue from ``out/checkpoint.pt`` when it exists.
        progress: progress bar and per-epoch line on stderr (rank 0).
    """

    data: str = "mnist"
    data_root: str | None = None
    download: bool = False
    model: str = "vae"
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    latent_dim: int = 20
    hidden: tuple[int, ...] = (400,)
    likelihood: str = "bernoulli"
    binarize: str = "dynamic"
    guide: str = "amortised"
    elbo: str = "analytic-kl"
    objective: str = "elbo"
    k: int = 1
    estimator: str = "reparam"
    n_train: int | None = None
    precision: str = "fp32"
    deterministic: bool = False
    device: str = "auto"
    seed: int = 0
    out: str = "runs/vae"
    resume: bool = False
    progress: bool = True

    @property
    def checkpoint(self) -> str:
        """``out/checkpoint.pt``."""
        return str(Path(self.out) / "checkpoint.pt")

    def train_config(self) -> TrainConfig:
        """The :class:`~ppl_gen.infer.training.TrainConfig` of the fit."""
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            elbo=self.elbo,
            objective=self.objective,
            k=self.k,
            estimator=self.estimator,
            seed=self.seed,
            device=self.device,
            checkpoint=self.checkpoint,
            progress=self.progress,
            precision=self.precision,
            deterministic=self.deterministic,
        )

    def validate(self) -> None:
        """Check every option before any work.

        Raises:
            PplGenError: naming the first bad parameter.
        """
        self.train_config().validate()
        check_output_dir(self.out, "out")
        if self.model not in MODELS:
            raise PplGenError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        ModelSpec(self.model, 784, self.latent_dim, tuple(self.hidden), self.likelihood).validate()
        if self.guide not in VAE_GUIDES:
            raise PplGenError(f"guide must be one of {', '.join(VAE_GUIDES)}, got {self.guide!r}")


def run_train_vae(
    config: TrainVAEConfig, *, dist: DistributedContext | None = None
) -> dict[str, Any]:
    """Train a VAE by SVI and write its outputs (module docs).

    Args:
        config: the job's settings.
        dist: the data-parallel context (default: :func:`ppl_gen.core.distributed.init_from_env`).

    Returns:
        The summary written to ``metrics.json`` (``checkpoint``, ``epochs``, ``iterations``,
        ``train_seconds``, ``processes``, ``precision``, ``final_train_elbo`` in nats per
        datapoint, ``history``); the same on every rank.

    Raises:
        PplGenError: a bad option (naming the parameter), missing data, or a refused resume.
        TrainingDiverged: the loss became non-finite or exploded.
    """
    config.validate()
    ctx = dist if dist is not None else init_from_env(config.device)
    splits = load_dataset(
        config.data,
        config.data_root,
        download=config.download,
        binarize=config.binarize,
        seed=config.seed,
        n_train=config.n_train,
    )
    widths = tuple(config.hidden)
    spec = ModelSpec(
        config.model,
        splits.data_dim,
        config.latent_dim,
        widths,
        config.likelihood,
        splits.image_shape,
    )
    seed_everything(config.seed)  # initial weights follow the seed
    net = build_model(spec)
    q = build_guide(config.guide, net, splits.train.shape[0], widths)
    full_spec = {
        "model": spec.to_dict(),
        "guide": config.guide,
        "num_train": int(splits.train.shape[0]),
        "data": {
            "name": config.data,
            "root": config.data_root,
            "binarize": config.binarize,
            "seed": config.seed,
        },
    }
    tc = config.train_config()
    # The engine holds the output lock while it trains and checkpoints; the summary and
    # the figure are written under it afterwards (taken only now, so that a refused run
    # leaves no folder behind).
    result = train(net, q, splits, tc, resume=config.resume, spec=full_spec, dist=ctx)
    summary = _summary(config, tc, result, ctx)
    if ctx.is_main:  # rank 0 alone writes
        out = Path(config.out)
        with output_lock(out):
            reports.plot_loss_curves({config.guide: result.history}, out / "loss_curves.png")
            write_json(out / "metrics.json", summary)
    return summary


def _summary(config: TrainVAEConfig, tc: TrainConfig, result, ctx) -> dict[str, Any]:
    return {
        "checkpoint": tc.checkpoint,
        "epochs": result.epochs,
        "iterations": result.iterations,
        "train_seconds": result.seconds,
        "processes": ctx.world_size,
        "precision": config.precision,
        "final_train_elbo": result.history["train_elbo"][-1],
        "history": result.history,
    }
