"""Build autoencoders by name from JSON-able specs, and reload them from checkpoints.

Checkpoints written by :func:`ppl_gen.autoencoders.train_autoencoder` have
``state["kind"] == "autoencoder"`` and ``state["spec"]["model"]`` = the model's
:meth:`~ppl_gen.autoencoders.base.Autoencoder.spec`, so the exact architecture can be
rebuilt without the code that trained it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ppl_gen.autoencoders.base import Autoencoder
from ppl_gen.autoencoders.conv import ConvAutoencoder
from ppl_gen.autoencoders.mlp import MLPAutoencoder
from ppl_gen.core.checkpoint import load_checkpoint
from ppl_gen.core.device import resolve_device
from ppl_gen.core.errors import PplGenError

ARCHS = ("mlp", "conv")
KIND = "autoencoder"


def make_autoencoder(
    arch: str,
    data_dim: int,
    image_shape: Sequence[int],
    latent_dim: int,
    hidden: Sequence[int] = (256,),
    *,
    activation: str = "relu",
    output: str = "sigmoid",
    channels: Sequence[int] = (32, 64),
) -> Autoencoder:
    """An :class:`MLPAutoencoder` (``arch="mlp"``) or :class:`ConvAutoencoder`
    (``arch="conv"``; ``hidden``/``activation`` unused) for rows of ``data_dim`` values.

    Raises:
        PplGenError: unknown ``arch`` (``arch``), or sizes the architecture rejects.
    """
    if arch == "mlp":
        return MLPAutoencoder(data_dim, latent_dim, hidden, activation, output, image_shape)
    if arch == "conv":
        return ConvAutoencoder(image_shape, latent_dim, channels, output)
    raise PplGenError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")


def build_autoencoder(spec: dict) -> Autoencoder:
    """Rebuild an autoencoder from its :meth:`~Autoencoder.spec` dictionary.

    Raises:
        PplGenError: if the spec names an unknown architecture or is incomplete.
    """
    try:
        if spec["arch"] == "conv":
            return ConvAutoencoder(
                spec["image_shape"], spec["latent_dim"], spec["channels"], spec["output"]
            )
        return make_autoencoder(
            spec["arch"],
            spec["data_dim"],
            spec["image_shape"],
            spec["latent_dim"],
            spec["hidden"],
            activation=spec["activation"],
            output=spec["output"],
        )
    except (KeyError, TypeError) as exc:
        raise PplGenError(f"CHECKPOINT: incomplete autoencoder spec (missing {exc})") from None


def load_autoencoder(
    checkpoint: str, device: str | torch.device = "auto"
) -> tuple[Autoencoder, dict]:
    """Rebuild the autoencoder saved in ``checkpoint`` and load its weights (eval mode).

    Returns:
        ``(model, state)``: the model on the resolved device and the checkpoint dict.

    Raises:
        PplGenError: if the file is not a ppl_gen autoencoder checkpoint (``CHECKPOINT``) or
            the device is not available (``device``).
    """
    dev = resolve_device(device)
    state = load_checkpoint(checkpoint, map_location=dev)
    if state.get("kind") != KIND:
        raise PplGenError(
            f"CHECKPOINT: {checkpoint!r} is not an autoencoder checkpoint "
            f"(kind {state.get('kind', 'latent-variable')!r})"
        )
    model = build_autoencoder((state.get("spec") or {}).get("model") or {})
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise PplGenError(f"CHECKPOINT: weights do not match the saved spec ({first})") from None
    return model.to(dev).eval(), state
