"""Training loop of the deterministic autoencoders: Adam on minibatches.

The objective per datapoint is

    L(x) = loss(x, g(f(x_tilde))) + sparsity * |f(x_tilde)|_1 + contractive * ||J_f(x_tilde)||_F^2

with ``x_tilde = x`` unless a corruption is configured (denoising autoencoder, Vincent et
al. 2010, eq. 5 with the clean ``x`` as target), ``loss`` the model's reconstruction loss
(:meth:`~ppl_gen.autoencoders.base.Autoencoder.reconstruction_loss`), the L1 activity
penalty of the sparse autoencoder and the exact contractive penalty of Rifai et al. (2011,
eq. 3) (:mod:`ppl_gen.autoencoders.penalties`).  The minibatch mean of ``L`` is minimised.

Like :func:`ppl_gen.infer.training.train`: a progress bar, the validation reconstruction loss
after every epoch, an atomic checkpoint after every epoch (``kind = "autoencoder"``) and an
exact resume -- model, optimiser, epoch, history and the random streams of the minibatch
order, the corruption noise and dynamic binarisation are restored, so a resumed run
continues exactly as an uninterrupted one.  A non-finite loss raises
:class:`ppl_gen.infer.training.TrainingDiverged` and keeps the last good checkpoint.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ppl_gen.autoencoders.base import Autoencoder
from ppl_gen.autoencoders.build import KIND
from ppl_gen.autoencoders.evaluation import reconstruction_errors
from ppl_gen.autoencoders.noise import check_noise, corrupt
from ppl_gen.autoencoders.penalties import sparsity_penalty
from ppl_gen.core.checkpoint import load_checkpoint, save_checkpoint
from ppl_gen.core.device import resolve_device, to_device
from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.data.datasets import DataSplits, binarize_batch, iterate_minibatches

VARIANTS = ("ae", "dae", "sae", "cae")
VARIANT_NAMES = {
    "ae": "autoencoder",
    "dae": "denoising autoencoder",
    "sae": "sparse autoencoder",
    "cae": "contractive autoencoder",
}


@dataclass
class AutoencoderTrainConfig:
    """Settings of :func:`train_autoencoder`.

    Attributes:
        epochs: passes over the training set (>= 1).
        batch_size: rows per minibatch (>= 1).
        lr: Adam learning rate.
        weight_decay: Adam L2 weight decay.
        noise: ``None`` (no corruption), ``"gaussian"`` or ``"masking"`` (denoising).
        noise_level: Gaussian standard deviation or masking probability.
        sparsity: weight of the L1 activity penalty (sparse autoencoder), >= 0.
        contractive: weight of the squared Jacobian norm (contractive autoencoder), >= 0.
        seed: seeds the minibatch order, the corruption and dynamic binarisation.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        checkpoint: path of the checkpoint written after every epoch (or ``None``).
        progress: show a progress bar and a line per epoch.
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

    def validate(self) -> None:
        """Raise :class:`PplGenError` naming the first bad field (its CLI flag)."""
        require_positive_int("epochs", self.epochs)
        require_positive_int("batch_size", self.batch_size)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise PplGenError(f"lr must be a positive number, got {self.lr!r}")
        for flag, value in (
            ("weight_decay", self.weight_decay),
            ("sparsity", self.sparsity),
            ("contractive", self.contractive),
        ):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise PplGenError(f"{flag} must be a number >= 0, got {value!r}")
        if self.noise is not None:
            check_noise(self.noise, self.noise_level)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise PplGenError(f"seed must be a non-negative integer, got {self.seed!r}")


def variant_config(variant: str, **overrides) -> AutoencoderTrainConfig:
    """Training settings of a named autoencoder variant, with its default regulariser.

    ``ae``: plain; ``dae``: Gaussian corruption, standard deviation 0.3 (masking: use
    ``noise="masking", noise_level=0.25``); ``sae``: L1 activity penalty 0.05; ``cae``:
    contractive penalty 0.05.  ``overrides`` replace any field (``None`` values are ignored).

    Raises:
        PplGenError: unknown ``variant`` (naming the ``train`` subcommand), or a regulariser
            that contradicts the variant (e.g. ``noise`` for ``ae``).
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
            validation rows) and ``seconds`` (cumulative training wall time).  Losses are in
            nats per datapoint for sigmoid outputs, squared error for linear ones.
        epochs: epochs completed.
        iterations: optimiser steps taken.
        seconds: training wall time (seconds, validation excluded).
    """

    history: dict[str, list] = field(default_factory=dict)
    epochs: int = 0
    iterations: int = 0
    seconds: float = 0.0


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


def train_autoencoder(
    model: Autoencoder,
    data: DataSplits,
    config: AutoencoderTrainConfig | None = None,
    *,
    resume: bool = False,
    spec: dict | None = None,
) -> AutoencoderTrainResult:
    """Fit ``model`` to ``data.train`` with Adam (see the module docstring).

    Args:
        model: an :class:`~ppl_gen.autoencoders.base.Autoencoder`; moved to the configured
            device.
        data: the dataset (rows of ``model.data_dim`` values); with ``binarize="dynamic"``
            every training minibatch is freshly binarised.
        config: training settings (default :class:`AutoencoderTrainConfig`).
        resume: continue from ``config.checkpoint`` if it exists.
        spec: JSON-able description stored in the checkpoint (``spec["model"]`` is filled
            with ``model.spec()`` when absent), so tools can rebuild the model.

    Returns:
        :class:`AutoencoderTrainResult`.

    Raises:
        PplGenError: bad configuration, data of the wrong width, or a checkpoint that does
            not match.
        TrainingDiverged: a non-finite loss (the last checkpoint is left as it was).
    """
    from ppl_gen.infer.training import TrainingDiverged

    config = config or AutoencoderTrainConfig()
    config.validate()
    if data.data_dim != model.data_dim:
        raise PplGenError(
            f"data: the autoencoder takes {model.data_dim} values per datapoint, "
            f"{data.name} has {data.data_dim}"
        )
    device = resolve_device(config.device)
    data = data.to(device)
    model.to(device)
    n = data.train.shape[0]
    spec = {**(spec or {})}
    spec.setdefault("model", model.spec())
    generators = {
        "shuffle": torch.Generator().manual_seed(config.seed),
        "noise": torch.Generator(device=device).manual_seed(config.seed + 1),
        "binarize": torch.Generator(device=device).manual_seed(config.seed + 2),
    }
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    keys = ("epoch", "train_loss", "train_reconstruction", "val_reconstruction", "seconds")
    result = AutoencoderTrainResult(history={k: [] for k in keys})
    start_epoch = 0
    ckpt = Path(config.checkpoint) if config.checkpoint else None
    if resume and ckpt is not None and ckpt.exists():
        state = load_checkpoint(ckpt, map_location=device)
        if state.get("kind") != KIND:
            raise PplGenError(f"resume: {str(ckpt)!r} is not an autoencoder checkpoint")
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise PplGenError(f"resume: the model does not match {str(ckpt)!r} ({first})") from None
        optimizer.load_state_dict(state["optimizer"])
        result = AutoencoderTrainResult(
            history=state["history"],
            epochs=state["epoch"],
            iterations=state["iterations"],
            seconds=state["seconds"],
        )
        start_epoch = state["epoch"]
        rng = to_device(state["rng"], "cpu")
        for name, gen in generators.items():
            gen.set_state(rng[name])
    dynamic = data.binarize == "dynamic"
    for epoch in range(start_epoch, config.epochs):
        model.train()
        t0 = time.perf_counter()
        total = recon_total = 0.0
        seen = 0
        batches = iterate_minibatches(
            n, config.batch_size, generator=generators["shuffle"], device=device
        )
        bar = tqdm(
            batches,
            total=-(-n // config.batch_size),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=True if not config.progress else None,
            leave=False,
        )
        for batch, idx in enumerate(bar):
            xb = data.train[idx]
            if dynamic:
                xb = binarize_batch(xb, generators["binarize"])
            loss_vec, recon_vec = autoencoder_loss(model, xb, config, generators["noise"])
            loss = loss_vec.mean()
            if not torch.isfinite(loss):
                where = f" (last good checkpoint kept at {ckpt})" if ckpt else ""
                raise TrainingDiverged(
                    f"non-finite loss at epoch {epoch + 1}, batch {batch + 1}{where}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            result.iterations += 1
            total += float(loss_vec.detach().sum())
            recon_total += float(recon_vec.detach().sum())
            seen += idx.shape[0]
            bar.set_postfix(loss=f"{total / seen:.2f}", refresh=False)
        result.seconds += time.perf_counter() - t0
        model.eval()
        val = float(reconstruction_errors(model, data.val).mean()) if len(data.val) else None
        result.epochs = epoch + 1
        for key, value in zip(
            keys, (epoch + 1, total / n, recon_total / n, val, result.seconds), strict=True
        ):
            result.history[key].append(value)
        if config.progress:
            tqdm.write(
                f"epoch {epoch + 1}: train loss {total / n:.3f}"
                + (f", validation reconstruction {val:.3f}" if val is not None else "")
                + " per datapoint"
            )
        if ckpt is not None:
            save_checkpoint(
                ckpt,
                {
                    "kind": KIND,
                    "spec": spec,
                    "config": asdict(config),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": result.epochs,
                    "iterations": result.iterations,
                    "seconds": result.seconds,
                    "history": result.history,
                    "rng": {name: gen.get_state() for name, gen in generators.items()},
                },
            )
    model.eval()
    return result
