"""Reconstructions ``decode(encode(x))`` and the denoising before/after view."""

from __future__ import annotations

import torch

from ppl_gen.autoencoders.noise import corrupt
from ppl_gen.latent.pairs import EncoderDecoder


def reconstruct(
    pair: EncoderDecoder, x: torch.Tensor, y: torch.Tensor | None = None
) -> torch.Tensor:
    """``decode(encode(x))``: ``(N, D) -> (N, D)`` on CPU (labels ``y`` for conditional
    pairs).

    Raises:
        PplGenError: the pair has no encoder, or ``x`` has the wrong width.
    """
    return pair.decode_rows(pair.encode_rows(x, y), y).cpu()


def denoise(
    pair: EncoderDecoder,
    x: torch.Tensor,
    noise: str = "gaussian",
    level: float = 0.3,
    y: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt ``x`` (see :func:`ppl_gen.autoencoders.corrupt`) and reconstruct it.

    Returns:
        ``(noisy (N, D), reconstruction of the noisy input (N, D))`` on CPU.

    Raises:
        PplGenError: bad ``noise`` / ``level`` (``noise``, ``noise_level``) or as
            :func:`reconstruct`.
    """
    x = x.reshape(x.shape[0], -1).to(pair.device)
    noisy = corrupt(x, noise, level, generator)
    return noisy.cpu(), reconstruct(pair, noisy, y)
