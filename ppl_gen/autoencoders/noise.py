"""Input corruption of the denoising autoencoder (Vincent et al. 2008; 2010, sec. 4.2).

The denoising autoencoder reconstructs the clean ``x`` from a corrupted ``x_tilde ~
C(x_tilde | x)``:

* ``"gaussian"``: additive isotropic Gaussian noise, ``x_tilde = x + level * eps``,
  ``eps ~ N(0, I)`` (``level`` is the standard deviation, in data units);
* ``"masking"``: every value is independently set to 0 with probability ``level``
  (masking noise, the "zero-masking" corruption of Vincent et al. 2010).
"""

from __future__ import annotations

import math

import torch

from ppl_gen.core.errors import PplGenError

NOISES = ("gaussian", "masking")


def check_noise(kind: str, level: float) -> tuple[str, float]:
    """Validate a corruption request and return it.

    Raises:
        PplGenError: naming ``noise`` for an unknown kind, ``noise_level`` for a level
            outside ``[0, inf)`` (gaussian) or ``[0, 1)`` (masking).
    """
    if kind not in NOISES:
        raise PplGenError(f"noise must be one of {', '.join(NOISES)}, got {kind!r}")
    ok = isinstance(level, (int, float)) and not isinstance(level, bool) and math.isfinite(level)
    if not ok or level < 0 or (kind == "masking" and level >= 1):
        accepted = "a number >= 0" if kind == "gaussian" else "a probability in [0, 1)"
        raise PplGenError(f"noise_level for {kind} noise must be {accepted}, got {level!r}")
    return kind, float(level)


def corrupt(
    x: torch.Tensor, kind: str, level: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw a corrupted copy ``x_tilde ~ C(. | x)``.

    Args:
        x: ``(batch, D)`` clean data, any device.
        kind: ``"gaussian"`` or ``"masking"`` (see the module docstring).
        level: Gaussian standard deviation, or masking probability.
        generator: optional :class:`torch.Generator` on ``x``'s device for reproducible
            noise (``None``: torch's global generator).

    Returns:
        ``(batch, D)`` corrupted data, same dtype and device as ``x``.

    Raises:
        PplGenError: for an unknown ``kind`` or a bad ``level``.
    """
    kind, level = check_noise(kind, level)
    if kind == "gaussian":
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + level * eps
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.where(u < level, torch.zeros_like(x), x)
