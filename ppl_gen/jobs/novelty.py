"""Novelty detection with autoencoders and VAEs: train without one class, score the test
images, and measure how well the score separates the unseen class (AUROC).

Scores (higher = more anomalous):

* ``reconstruction``: the squared reconstruction error ``||x - g(f(x))||^2`` of the
  encoder/decoder pair (autoencoders; for VAEs the decoder mean at the posterior mean);
  Japkowicz et al. 1995, Sakurada & Yairi 2014.
* ``iwae``: minus the IWAE-K bound on ``log p(x)`` (nats), a lower-bound estimate of the
  negative log-likelihood (Burda et al. 2016, eq. 8); VAEs only.

AUROC is :func:`sklearn.metrics.roc_auc_score` with the held-out class as the positive
label: the probability that a random image of the unseen class scores higher than a random
image of the training classes (0.5 = chance, 1 = perfect).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ppl_gen.autoencoders.mlp import MLPAutoencoder
from ppl_gen.autoencoders.trainer import train_autoencoder, variant_config
from ppl_gen.core.device import module_device
from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.core.io import check_output_dir, write_json
from ppl_gen.data.datasets import DataSplits, load_dataset
from ppl_gen.engine import seed_everything
from ppl_gen.guides import AmortisedGaussianGuide
from ppl_gen.infer.bounds import evaluate_bounds
from ppl_gen.infer.training import TrainConfig, train
from ppl_gen.jobs.train_autoencoder import data_spec
from ppl_gen.latent.pairs import EncoderDecoder
from ppl_gen.lvm.builders import ModelSpec
from ppl_gen.models import VAE

MODELS = ("ae", "dae", "sae", "cae", "vae")


def auroc(scores: torch.Tensor | np.ndarray, is_novel: torch.Tensor | np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for detecting ``is_novel``.

    Args:
        scores: ``(N,)`` anomaly scores (higher = more novel).
        is_novel: ``(N,)`` bool, the ground truth.

    Raises:
        PplGenError: if both groups are not present or a score is not finite.
    """
    from sklearn.metrics import roc_auc_score

    s = np.asarray(torch.as_tensor(scores).detach().cpu().double()).reshape(-1)
    t = np.asarray(torch.as_tensor(is_novel).cpu()).astype(bool).reshape(-1)
    if s.shape != t.shape:
        raise PplGenError(f"scores and labels differ in length: {s.shape[0]} vs {t.shape[0]}")
    if t.all() or not t.any():
        raise PplGenError("AUROC needs both novel and normal test points")
    if not np.isfinite(s).all():
        raise PplGenError("anomaly scores contain NaN or inf")
    return float(roc_auc_score(t, s))


def holdout_class(splits: DataSplits, holdout: int) -> DataSplits:
    """Remove class ``holdout`` from the train and validation splits (test unchanged).

    Raises:
        PplGenError: naming ``holdout_class`` for unlabelled data or a class absent from
            the training or test labels.
    """
    if splits.train_labels is None or splits.test_labels is None:
        raise PplGenError(f"holdout_class needs labelled data; {splits.name} has no labels")
    present = sorted(int(c) for c in torch.unique(splits.train_labels))
    if holdout not in present or not bool((splits.test_labels == holdout).any()):
        raise PplGenError(
            f"holdout_class must be a class present in train and test {present}, got {holdout!r}"
        )
    keep_tr = splits.train_labels != holdout
    keep_va = splits.val_labels != holdout if splits.val_labels is not None else None
    return replace(
        splits,
        train=splits.train[keep_tr],
        train_labels=splits.train_labels[keep_tr],
        val=splits.val if keep_va is None else splits.val[keep_va],
        val_labels=None if keep_va is None else splits.val_labels[keep_va],
    )


@torch.no_grad()
def reconstruction_scores(pair, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """``||x - decode(encode(x))||^2`` per row for an :class:`~ppl_gen.latent.EncoderDecoder`
    or an :class:`~ppl_gen.autoencoders.Autoencoder`; ``(N, D) -> (N,)`` on CPU."""
    out = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        if hasattr(pair, "encode_rows"):
            rec = pair.decode_rows(pair.encode_rows(xb)).cpu()
        else:
            dev = module_device(pair)
            rec = pair.reconstruct(xb.to(dev)).cpu()
        out.append((rec - xb.cpu().reshape(rec.shape)).pow(2).sum(-1))
    return torch.cat(out)


def iwae_scores(model, guide, x: torch.Tensor, k: int = 100) -> torch.Tensor:
    """``-IWAE-K(x)`` per row (nats), ``(N,)`` on CPU (:func:`ppl_gen.evaluate_bounds`)."""
    return -evaluate_bounds(model, guide, x, k).iwae


@dataclass
class NoveltyConfig:
    """Settings of :func:`run_novelty`.

    Attributes:
        model: ``ae``, ``dae``, ``sae``, ``cae`` (MLP autoencoders, squared-error score) or
            ``vae`` (scored by reconstruction error and by ``-IWAE-K``).
        holdout_class: the class left out of training (the "novelty").
        data, data_root: the dataset (``digits``, ``mnist``, ...).
        latent_dim, hidden: the network (MLP) sizes.
        epochs, batch_size, lr: training.
        iwae_k: K of the IWAE score (VAE).
        n_train, n_test: optional subsets.
        seed, device, out, progress: as elsewhere; ``out`` receives ``metrics.json`` and
            ``checkpoint.pt``.
    """

    model: str = "ae"
    holdout_class: int = 9
    data: str = "digits"
    data_root: str | None = None
    latent_dim: int = 16
    hidden: tuple[int, ...] = (256,)
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    iwae_k: int = 100
    n_train: int | None = None
    n_test: int | None = None
    seed: int = 0
    device: str = "auto"
    out: str | None = "runs/novelty"
    progress: bool = True

    def validate(self) -> None:
        """Raise :class:`PplGenError` naming the first bad option."""
        if self.model not in MODELS:
            raise PplGenError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if isinstance(self.holdout_class, bool) or not isinstance(self.holdout_class, int):
            raise PplGenError(f"holdout_class must be an integer, got {self.holdout_class!r}")
        for flag, v in (
            ("latent_dim", self.latent_dim),
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("iwae_k", self.iwae_k),
        ):
            require_positive_int(flag, v)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise PplGenError(f"lr must be positive, got {self.lr!r}")


def run_novelty(config: NoveltyConfig) -> dict:
    """Train ``config.model`` without ``config.holdout_class`` and report the AUROC of its
    novelty scores on the full test set (the held-out class = novel).

    Returns:
        The metrics dict (also written to ``out/metrics.json``): ``auroc`` per score
        (``reconstruction`` and, for the VAE, ``iwae``), the mean score of normal and novel
        test images, sizes, timings and the config.

    Raises:
        PplGenError: bad configuration or data.
    """
    config.validate()
    out = check_output_dir(config.out, "out") if config.out else None
    seed_everything(config.seed)
    binarize = "dynamic" if config.model == "vae" else "none"
    splits = load_dataset(
        config.data, config.data_root, binarize=binarize, seed=config.seed, n_test=config.n_test
    )
    train_splits = holdout_class(splits, config.holdout_class)
    if config.n_train is not None:
        require_positive_int("n_train", config.n_train)
        train_splits = replace(
            train_splits,
            train=train_splits.train[: config.n_train],
            train_labels=train_splits.train_labels[: config.n_train],
        )
    ckpt = str(out / "checkpoint.pt") if out is not None else None
    t0 = time.perf_counter()
    scores: dict[str, torch.Tensor] = {}
    data = data_spec(config.data, config.data_root, binarize, config.seed)
    if config.model == "vae":
        model = VAE(
            splits.data_dim, config.latent_dim, config.hidden, "bernoulli", splits.image_shape
        )
        guide = AmortisedGaussianGuide(model, config.hidden)
        tc = TrainConfig(
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            seed=config.seed,
            device=config.device,
            checkpoint=ckpt,
            progress=config.progress,
        )
        mspec = ModelSpec(
            "vae",
            splits.data_dim,
            config.latent_dim,
            config.hidden,
            "bernoulli",
            splits.image_shape,
        )
        spec = {
            "model": mspec.to_dict(),
            "guide": "amortised",
            "num_train": int(train_splits.train.shape[0]),
            "data": data,
        }
        train(model, guide, train_splits, tc, spec=spec)
        train_seconds = time.perf_counter() - t0
        device = module_device(model)
        x = splits.test.to(device)
        pair = EncoderDecoder(
            lambda v: guide.encode(v)["z"][0],
            model.decode_mean,
            config.latent_dim,
            splits.image_shape,
            device=device,
        )
        scores["reconstruction"] = reconstruction_scores(pair, x)
        scores["iwae"] = iwae_scores(model, guide, x, config.iwae_k)
    else:
        model = MLPAutoencoder(
            splits.data_dim, config.latent_dim, config.hidden, image_shape=splits.image_shape
        )
        tc = variant_config(
            config.model,
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            seed=config.seed,
            device=config.device,
            checkpoint=ckpt,
            progress=config.progress,
        )
        train_autoencoder(model, train_splits, tc, spec={"variant": config.model, "data": data})
        train_seconds = time.perf_counter() - t0
        scores["reconstruction"] = reconstruction_scores(model, splits.test)
    novel = splits.test_labels == config.holdout_class
    metrics = {
        "model": config.model,
        "dataset": splits.name,
        "holdout_class": config.holdout_class,
        "n_train": int(train_splits.train.shape[0]),
        "n_test": int(splits.test.shape[0]),
        "n_novel": int(novel.sum()),
        "auroc": {name: auroc(s, novel) for name, s in scores.items()},
        "mean_score_normal": {name: float(s[~novel].mean()) for name, s in scores.items()},
        "mean_score_novel": {name: float(s[novel].mean()) for name, s in scores.items()},
        "score_units": {
            "reconstruction": "squared error per image (grey levels in [0, 1])",
            "iwae": "nats per image (-IWAE-K)",
        },
        "train_seconds": train_seconds,
        "checkpoint": ckpt,
        "config": {**asdict(config), "hidden": list(config.hidden)},
    }
    if out is not None:
        write_json(Path(out) / "metrics.json", metrics)
    return metrics
