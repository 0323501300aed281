"""Training, reloading and class-conditional sampling of the conditional VAE
(:class:`ppl_gen.models.CVAE` with :class:`ppl_gen.guides.ConditionalEncoderGuide`).

Training is :func:`ppl_gen.infer.training.train` (SVI, checkpoints, exact resume) unchanged, on
rows ``[x | one_hot(y)]`` (:func:`ppl_gen.models.cvae.with_label_columns`); its spec's
``kind = "cvae"`` is stored in every checkpoint, so that ``ppl-gen evaluate`` and the latent tools
recognise it.  Its ELBO and IWAE-K (:func:`ppl_gen.evaluate_bounds`) bound
``log p(x | y)`` in nats per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ppl_gen.core.checkpoint import load_checkpoint
from ppl_gen.core.device import resolve_device
from ppl_gen.core.errors import PplGenError
from ppl_gen.data.datasets import DataSplits
from ppl_gen.engine import seed_everything
from ppl_gen.guides.conditional_encoder import ConditionalEncoderGuide
from ppl_gen.infer.bounds import BoundEstimate, evaluate_bounds
from ppl_gen.infer.training import TrainConfig, train
from ppl_gen.models.cvae import CVAE, one_hot, with_label_columns

KIND = "cvae"


@dataclass
class CVAEFit:
    """A trained CVAE.

    Attributes:
        model: the :class:`~ppl_gen.models.CVAE`.
        guide: its :class:`~ppl_gen.guides.ConditionalEncoderGuide`.
        data: the label-augmented splits it was trained on (rows ``D + C``).
        result: the :class:`ppl_gen.infer.training.TrainResult` (ELBO in nats per image).
    """

    model: CVAE
    guide: ConditionalEncoderGuide
    data: DataSplits
    result: object


def build_cvae(
    splits: DataSplits,
    latent_dim: int = 20,
    hidden: Sequence[int] = (400,),
    likelihood: str = "bernoulli",
) -> tuple[CVAE, ConditionalEncoderGuide, DataSplits]:
    """CVAE and guide sized for ``splits`` (plain image rows with labels), and the
    label-augmented splits to train them on.

    Raises:
        PplGenError: unlabelled data (``data``) or bad sizes.
    """
    aug = with_label_columns(splits)
    num_classes = aug.data_dim - splits.data_dim
    model = CVAE(splits.data_dim, num_classes, latent_dim, hidden, likelihood, splits.image_shape)
    return model, ConditionalEncoderGuide(model), aug


def train_cvae(
    splits: DataSplits,
    config: TrainConfig,
    *,
    latent_dim: int = 20,
    hidden: Sequence[int] = (400,),
    likelihood: str = "bernoulli",
    data_spec: dict | None = None,
    resume: bool = False,
) -> CVAEFit:
    """Fit a CVAE to labelled ``splits`` with :func:`ppl_gen.infer.training.train`.

    Args:
        splits: image rows ``(n, D)`` with labels.
        config: a :class:`ppl_gen.infer.training.TrainConfig` (every checkpoint it writes has
            ``kind = "cvae"``, taken from the spec); ``config.seed`` seeds Python, NumPy and
            torch before the networks are built, so the same call gives the same weights.
        latent_dim, hidden, likelihood: the model (see :class:`~ppl_gen.models.CVAE`).
        data_spec: how the data was loaded (stored in the checkpoint for the tools).
        resume: continue from ``config.checkpoint``.

    Returns:
        :class:`CVAEFit`.
    """
    seed_everything(config.seed)  # before the networks are built: same seed, same weights
    model, guide, aug = build_cvae(splits, latent_dim, hidden, likelihood)
    spec = {
        "kind": KIND,
        "model": model.spec(),
        "guide_hidden": list(guide.hidden),
        "num_train": int(aug.train.shape[0]),
        "data": data_spec,
    }
    result = train(model, guide, aug, config, resume=resume, spec=spec)
    return CVAEFit(model, guide, aug, result)


def load_cvae(
    checkpoint: str, device: str | torch.device = "auto"
) -> tuple[CVAE, ConditionalEncoderGuide, dict]:
    """Rebuild the CVAE and guide saved in ``checkpoint`` (eval mode, on ``device``).

    Raises:
        PplGenError: naming ``CHECKPOINT`` if it is not a CVAE checkpoint or does not match.
    """
    dev = resolve_device(device)
    state = load_checkpoint(checkpoint, map_location=dev)
    spec = state.get("spec") or {}
    if spec.get("kind") != KIND or "model" not in spec:
        raise PplGenError(f"CHECKPOINT: {checkpoint!r} is not a conditional VAE checkpoint")
    m = spec["model"]
    model = CVAE(
        m["image_dim"],
        m["num_classes"],
        m["latent_dim"],
        m["hidden"],
        m["likelihood"],
        m["image_shape"],
    )
    guide = ConditionalEncoderGuide(model, spec.get("guide_hidden"))
    try:
        model.load_state_dict(state["model"])
        guide.load_state_dict(state["guide"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise PplGenError(f"CHECKPOINT: weights do not match the saved spec ({first})") from None
    return model.to(dev).eval(), guide.to(dev).eval(), state


def cvae_bounds(
    model: CVAE, guide: ConditionalEncoderGuide, images: torch.Tensor, labels: torch.Tensor, k: int
) -> BoundEstimate:
    """ELBO and IWAE-K of ``log p(x | y)`` per image (nats).

    Args:
        images: ``(N, D)`` on the model's device; labels: ``(N,)`` ints.
        k: importance samples K.
    """
    rows = torch.cat([images, one_hot(labels, model.num_classes, images)], dim=1)
    return evaluate_bounds(model, guide, rows, k)


@torch.no_grad()
def sample_classes(
    model: CVAE, classes: Sequence[int], per_class: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` samples of each requested class, ``z ~ p(z)``, decoder means.

    Returns:
        ``(images (len(classes) * per_class, D), labels (...,))``, class-major order.

    Raises:
        PplGenError: a class outside ``0..C-1`` (``classes``).
    """
    for c in classes:
        if not 0 <= int(c) < model.num_classes:
            raise PplGenError(f"classes: classes must be in 0..{model.num_classes - 1}, got {c}")
    device = next(model.parameters()).device
    y = torch.tensor([int(c) for c in classes], device=device).repeat_interleave(per_class)
    return model.sample(y, generator), y
