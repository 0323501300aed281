"""Training of the deterministic autoencoders: Adam on minibatches, run by the engine.

The objective per datapoint is

    L(x) = loss(x, g(f(x_tilde))) + sparsity * |f(x_tilde)|_1 + contractive * ||J_f(x_tilde)||_F^2

with ``x_tilde = x`` unless a corruption is configured (denoising autoencoder, Vincent et
al. 2010, eq. 5 with the clean ``x`` as target), ``loss`` the model's reconstruction loss
(:meth:`~ppl_gen.autoencoders.base.Autoencoder.reconstruction_loss`), the L1 activity
penalty of the sparse autoencoder and the exact contractive penalty of Rifai et al. (2011,
eq. 3) (:mod:`ppl_gen.autoencoders.penalties`).  The minibatch mean of ``L`` is minimised.

The loop is :func:`ppl_gen.engine.fit` (:class:`AutoencoderTask` supplies the step): a
progress bar, the validation reconstruction loss after every epoch, a weights-only
checkpoint after every epoch (``kind = "autoencoder"``; the model under ``"model"`` and its
spec under ``"spec"``, as :func:`ppl_gen.autoencoders.load_autoencoder` reads them) and an
exact resume: model, optimiser, history, the global random state and the named streams of
the minibatch order, the corruption noise and dynamic binarisation are restored, so a
resumed run equals an uninterrupted one bit for bit.  A resume may change ``epochs``,
``progress``, ``device``, ``checkpoint`` and ``stop_after``; any other changed setting, a
changed architecture or other training data is refused naming it.  A non-finite or
exploded loss raises :class:`ppl_gen.engine.TrainingDiverged` and keeps the last good
checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ppl_gen.autoencoders.base import Autoencoder
from ppl_gen.autoencoders.build import KIND
from ppl_gen.autoencoders.evaluation import reconstruction_errors
from ppl_gen.autoencoders.noise import check_noise, corrupt
from ppl_gen.autoencoders.penalties import sparsity_penalty
from ppl_gen.core.device import resolve_device
from ppl_gen.core.distributed import single_process
from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.data.datasets import DataSplits, binarize_batch, iterate_minibatches
from ppl_gen.engine import (
    EpochSummary,
    LoopConfig,
    data_fingerprint,
    fit,
    seed_everything,
    settings_record,
)

VARIANTS = ("ae", "dae", "sae", "cae")
VARIANT_NAMES = {
    "ae": "autoencoder",
    "dae": "denoising autoencoder",
    "sae": "sparse autoencoder",
    "cae": "contractive autoencoder",
}

#: Settings a resume may change (applied from the new call).
MAY_CHANGE = frozenset({"epochs", "progress", "device", "checkpoint", "stop_after"})


@dataclass
class AutoencoderTrainConfig:
    """Settings of :func:`train_autoencoder`.

    Attributes:
        epochs: passes over the training set (>= 1); a resumed run continues up to it.
        batch_size: rows per minibatch (>= 1).
        lr: Adam learning rate.
        weight_decay: Adam L2 weight decay.
        noise: ``None`` (no corruption), ``"gaussian"`` or ``"masking"`` (denoising).
        noise_level: Gaussian standard deviation or masking probability.
        sparsity: weight of the L1 activity penalty (sparse autoencoder), >= 0.
        contractive: weight of the squared Jacobian norm (contractive autoencoder), >= 0.
        seed: seeds Python/NumPy/torch and the streams of the minibatch order, the
            corruption and dynamic binarisation.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        checkpoint: path of the checkpoint written after every epoch (or ``None``).
        progress: show a progress bar and a line per epoch (on stderr).
        stop_after: stop after this many epochs in this call (``None``: run to
            ``epochs``); a later call with ``resume=True`` continues.
    """

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    noise: str | None = None
    noise_level: float = 0.0
    sparsity: float = 0.0
    contractive: float = 0.0
    seed: int = 0
    device: str = "auto"
    checkpoint: str | None = None
    progress: bool = True
    stop_after: int | None = None

    def validate(self) -> None:
        """Raise :class:`PplGenError` naming the first bad field (its parameter name)."""
        require_positive_int("epochs", self.epochs)
        require_positive_int("batch_size", self.batch_size)
        if self.stop_after is not None:
            require_positive_int("stop_after", self.stop_after)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise PplGenError(f"lr must be a positive number, got {self.lr!r}")
        for name, value in (
            ("weight_decay", self.weight_decay),
            ("sparsity", self.sparsity),
            ("contractive", self.contractive),
        ):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise PplGenError(f"{name} must be a number >= 0, got {value!r}")
        if self.noise is not None:
            check_noise(self.noise, self.noise_level)
        if (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not 0 <= self.seed < 2**32
        ):
            raise PplGenError(f"seed must be an integer in 0 .. 2**32 - 1, got {self.seed!r}")


def variant_config(variant: str, **overrides) -> AutoencoderTrainConfig:
    """Training settings of a named autoencoder variant, with its default regulariser.

    ``ae``: plain; ``dae``: Gaussian corruption, standard deviation 0.3 (masking: use
    ``noise="masking", noise_level=0.25``); ``sae``: L1 activity penalty 0.05; ``cae``:
    contractive penalty 0.05.  ``overrides`` replace any field (``None`` values are ignored).

    Raises:
        PplGenError: unknown ``variant`` (named ``model``, as in ``ppl-gen novelty``), or a
            regulariser that contradicts the variant (e.g. ``noise`` for ``ae``).
    """
    if variant not in VARIANTS:
        raise PplGenError(f"model must be one of {', '.join(VARIANTS)}, got {variant!r}")
    defaults = {
        "ae": {},
        "dae": {"noise": "gaussian", "noise_level": 0.3},
        "sae": {"sparsity": 0.05},
        "cae": {"contractive": 0.05},
    }[variant]
    given = {k: v for k, v in overrides.items() if v is not None}
    if variant == "dae" and given.get("noise") == "masking" and "noise_level" not in given:
        given["noise_level"] = 0.25
    config = AutoencoderTrainConfig(**{**defaults, **given})
    if variant != "dae" and config.noise is not None:
        raise PplGenError(f"noise applies to dae only, not {variant}")
    if variant != "sae" and config.sparsity:
        raise PplGenError(f"sparsity applies to sae only, not {variant}")
    if variant != "cae" and config.contractive:
        raise PplGenError(f"contractive applies to cae only, not {variant}")
    return config


@dataclass
class AutoencoderTrainResult:
    """Outcome of :func:`train_autoencoder`.

    Attributes:
        history: per-epoch ``epoch``, ``train_loss`` (mean objective ``L`` per datapoint),
            ``train_reconstruction`` (its reconstruction part), ``val_reconstruction``
            (clean validation reconstruction loss per datapoint, ``None`` without
            validation rows) and ``seconds`` (cumulative training wall time, s).  Losses are
            in nats per datapoint for sigmoid outputs, squared error for linear ones.
        epochs: epochs completed (including those of a resumed checkpoint).
        iterations: optimiser steps taken.
        seconds: training wall time (s, validation excluded).
        resumed_from: the epoch the run resumed at (0: a fresh run).
    """

    history: dict[str, list] = field(default_factory=dict)
    epochs: int = 0
    iterations: int = 0
    seconds: float = 0.0
    resumed_from: int = 0


def autoencoder_loss(
    model: Autoencoder,
    x: torch.Tensor,
    config: AutoencoderTrainConfig,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-datapoint objective ``L(x)`` and its reconstruction part, both ``(batch,)``.

    Args:
        model: the autoencoder.
        x: ``(batch, D)`` clean minibatch (the reconstruction target).
        config: the regularisers (``noise``, ``sparsity``, ``contractive``).
        generator: random stream of the corruption (on ``x``'s device).
    """
    inp = x if config.noise is None else corrupt(x, config.noise, config.noise_level, generator)
    h = model.encode(inp)
    recon = model.reconstruction_loss(model.decode_raw(h), x)
    loss = recon
    if config.sparsity:
        loss = loss + config.sparsity * sparsity_penalty(h)
    if config.contractive:
        loss = loss + config.contractive * model.contractive_penalty(inp)
    return loss, recon


class AutoencoderTask:
    """The engine :class:`~ppl_gen.engine.Task` of :func:`train_autoencoder`.

    Components ``model`` and ``optimizer`` (Adam); streams ``shuffle`` (CPU, minibatch
    order, seeded with ``seed``), ``noise`` (corruption, ``seed + 1``) and ``binarize``
    (dynamic binarisation, ``seed + 2``), the last two on the data's device.

    Args:
        model: the autoencoder, already on ``data``'s device.
        data: the splits, on the training device.
        config: validated settings.
    """

    def __init__(self, model: Autoencoder, data: DataSplits, config: AutoencoderTrainConfig):
        self.model = model
        self.data = data
        self.config = config
        device = data.device
        self.optimizer = torch.optim.Adam(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.streams = {
            "shuffle": torch.Generator().manual_seed(config.seed),
            "noise": torch.Generator(device=device).manual_seed(config.seed + 1),
            "binarize": torch.Generator(device=device).manual_seed(config.seed + 2),
        }
        self.dynamic = data.binarize == "dynamic"

    def components(self) -> dict[str, Any]:
        return {"model": self.model, "optimizer": self.optimizer}

    def generators(self) -> dict[str, torch.Generator]:
        return self.streams

    def start_epoch(self, epoch: int) -> None:
        self.model.train()

    def batches(self, epoch: int) -> list[torch.Tensor]:
        return list(
            iterate_minibatches(
                self.data.train.shape[0],
                self.config.batch_size,
                generator=self.streams["shuffle"],
                device=self.data.device,
            )
        )

    def step(self, batch: torch.Tensor, iteration: int) -> Mapping[str, Any]:
        xb = self.data.train[batch]
        if self.dynamic:
            xb = binarize_batch(xb, self.streams["binarize"])
        loss_vec, recon_vec = autoencoder_loss(self.model, xb, self.config, self.streams["noise"])
        loss = loss_vec.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if torch.isfinite(loss):  # a non-finite loss stops the run before the next step
            self.optimizer.step()
        return {
            "loss": loss.detach(),
            "reconstruction": recon_vec.detach().mean(),
            "weight": int(batch.shape[0]),
        }

    def end_epoch(self, summary: EpochSummary) -> dict[str, Any]:
        self.model.eval()
        val = self.data.val
        return {
            "train_loss": summary.means["loss"],
            "train_reconstruction": summary.means["reconstruction"],
            "val_reconstruction": (
                float(reconstruction_errors(self.model, val).mean()) if len(val) else None
            ),
        }

    def summary_line(self, epoch: int, entries: Mapping[str, Any]) -> str:
        val = entries.get("val_reconstruction")
        return (
            f"epoch {epoch}: train loss {entries['train_loss']:.3f}"
            + (f", validation reconstruction {val:.3f}" if val is not None else "")
            + " per datapoint"
        )


def train_autoencoder(
    model: Autoencoder,
    data: DataSplits,
    config: AutoencoderTrainConfig | None = None,
    *,
    resume: bool = False,
    spec: dict | None = None,
) -> AutoencoderTrainResult:
    """Fit ``model`` to ``data.train`` with Adam (see the module docstring).

    Seeds Python, NumPy and torch with ``config.seed`` first (the networks are built by the
    caller: call :func:`ppl_gen.engine.seed_everything` before building them for identical
    weights from the same seed).

    Args:
        model: an :class:`~ppl_gen.autoencoders.base.Autoencoder` taking rows of
            ``data.data_dim`` values; moved to the configured device, left in eval mode.
        data: the dataset ``(n, D)`` rows; with ``binarize="dynamic"`` every training
            minibatch is freshly binarised.
        config: training settings (default :class:`AutoencoderTrainConfig`).
        resume: continue from ``config.checkpoint`` if it exists.
        spec: JSON-able description stored in the checkpoint (``spec["model"]`` is filled
            with ``model.spec()`` when absent), so tools can rebuild the model.

    Returns:
        :class:`AutoencoderTrainResult`.

    Raises:
        PplGenError: bad configuration, data of the wrong width, an output folder in use,
            or a resume whose checkpoint is of another kind, was written with other
            settings (naming the first one), another architecture or other data.
        TrainingDiverged: a non-finite or exploded loss (the last checkpoint is kept).
    """
    config = config or AutoencoderTrainConfig()
    config.validate()
    if data.data_dim != model.data_dim:
        raise PplGenError(
            f"data: the autoencoder takes {model.data_dim} values per datapoint, "
            f"{data.name} has {data.data_dim}"
        )
    device = resolve_device(config.device)
    seed_everything(config.seed)
    data = data.to(device)
    model.to(device)
    spec = {**(spec or {})}
    spec.setdefault("model", model.spec())
    task = AutoencoderTask(model, data, config)
    settings = {
        **settings_record(config),
        **settings_record(model.spec()),
        "binarize": data.binarize,
    }
    loop = LoopConfig(
        epochs=config.epochs,
        kind=KIND,
        settings=settings,
        may_change=MAY_CHANGE,
        data_fingerprint=data_fingerprint(data.train, data.val),
        meta={"spec": spec},
        checkpoint=config.checkpoint,
        resume=resume,
        stop_after=config.stop_after,
        seed=config.seed,
        progress=config.progress,
        desc="epoch",
    )
    try:
        out = fit(task, loop, single_process(device))
    finally:
        model.eval()
    return AutoencoderTrainResult(
        history=out.history,
        epochs=out.epochs,
        iterations=out.iterations,
        seconds=out.seconds,
        resumed_from=out.resumed_from,
    )
