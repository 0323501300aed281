"""Paths through latent space: linear and spherical interpolation, and the 2-D grid
spanned by four corner codes.

* ``lerp``: ``z(t) = (1 - t) z_0 + t z_1``.
* ``slerp``: spherical linear interpolation (Shoemake 1985), recommended for Gaussian
  latent spaces by White (2016, "Sampling generative networks", sec. 2.1): with
  ``omega`` the angle between ``z_0`` and ``z_1``,
  ``z(t) = sin((1 - t) omega) / sin(omega) z_0 + sin(t omega) / sin(omega) z_1``.
  Between unit vectors the whole path stays on the unit sphere; between vectors of
  different norms it moves along the great circle while the norm varies smoothly.
  Nearly parallel endpoints (``sin omega ~ 0``) fall back to ``lerp``.

Steps are ``t = 0, 1/(steps-1), ..., 1``: both endpoints are reproduced exactly.
"""

from __future__ import annotations

import torch

from ppl_gen.core.errors import PplGenError

METHODS = ("lerp", "slerp")


def check_endpoints(z0: torch.Tensor, z1: torch.Tensor) -> None:
    """Raise :class:`PplGenError` unless ``z0`` and ``z1`` are tensors of the same shape."""
    if not (torch.is_tensor(z0) and torch.is_tensor(z1)):
        raise PplGenError("interpolation endpoints must be tensors")
    if z0.shape != z1.shape or z0.dim() == 0:
        raise PplGenError(
            "interpolation endpoints must have the same shape (..., Z), got "
            f"{tuple(z0.shape)} and {tuple(z1.shape)}"
        )


def _steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise PplGenError(f"steps must be an integer >= 2, got {steps!r}")
    return steps


def _ts(steps: int, like: torch.Tensor) -> torch.Tensor:
    return torch.linspace(0.0, 1.0, steps, device=like.device, dtype=like.dtype)


def lerp(z0: torch.Tensor, z1: torch.Tensor, steps: int) -> torch.Tensor:
    """Linear interpolation.

    Args:
        z0, z1: endpoints of the same shape ``(..., Z)``.
        steps: number of points, >= 2 (``t`` evenly spaced on [0, 1]).

    Returns:
        ``(steps, ..., Z)``; entry 0 is ``z0`` and entry ``steps - 1`` is ``z1``.

    Raises:
        PplGenError: endpoints of different shapes, or ``steps < 2`` (``steps``).
    """
    check_endpoints(z0, z1)
    t = _ts(_steps(steps), z0).reshape(-1, *([1] * z0.dim()))
    out = (1 - t) * z0 + t * z1
    out[0], out[-1] = z0, z1
    return out


def slerp(z0: torch.Tensor, z1: torch.Tensor, steps: int, eps: float = 1e-7) -> torch.Tensor:
    """Spherical linear interpolation along the last dimension (see the module docstring).

    Args:
        z0, z1: endpoints of the same shape ``(..., Z)`` (rows interpolated independently).
        steps: number of points, >= 2.
        eps: below this ``sin(omega)`` the pair is treated as parallel (``lerp``).

    Returns:
        ``(steps, ..., Z)``; entry 0 is ``z0`` and entry ``steps - 1`` is ``z1``.

    Raises:
        PplGenError: endpoints of different shapes, or ``steps < 2`` (``steps``).
    """
    check_endpoints(z0, z1)
    t = _ts(_steps(steps), z0).reshape(-1, *([1] * z0.dim()))
    n0 = z0.norm(dim=-1, keepdim=True)
    n1 = z1.norm(dim=-1, keepdim=True)
    cos = ((z0 * z1).sum(-1, keepdim=True) / (n0 * n1).clamp_min(1e-30)).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    parallel = sin.abs() < eps
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    w0 = torch.where(parallel, 1 - t, torch.sin((1 - t) * omega) / safe)
    w1 = torch.where(parallel, t, torch.sin(t * omega) / safe)
    out = w0 * z0 + w1 * z1
    out[0], out[-1] = z0, z1
    return out


def interpolate(
    z0: torch.Tensor, z1: torch.Tensor, steps: int, method: str = "slerp"
) -> torch.Tensor:
    """``lerp`` or ``slerp`` by name.

    Raises:
        PplGenError: unknown ``method`` (``method``) and as :func:`lerp`.
    """
    if method not in METHODS:
        raise PplGenError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return (lerp if method == "lerp" else slerp)(z0, z1, steps)


def corner_grid(corners: torch.Tensor, n: int, method: str = "lerp") -> torch.Tensor:
    """An ``n x n`` grid of codes spanned by four corners.

    The left column interpolates top-left -> bottom-left, the right column top-right ->
    bottom-right, and each row interpolates between them (bilinear interpolation for
    ``lerp``; the same construction with ``slerp`` along each path).

    Args:
        corners: ``(4, Z)`` codes: top-left, top-right, bottom-left, bottom-right.
        n: grid side, >= 2.
        method: ``lerp`` or ``slerp``.

    Returns:
        ``(n * n, Z)`` codes in row-major order (row ``r``, column ``c`` at ``r * n + c``);
        the four corners are reproduced exactly.

    Raises:
        PplGenError: ``corners`` not ``(4, Z)`` (``corners``), ``n < 2`` or an unknown
            method.
    """
    if not torch.is_tensor(corners) or corners.dim() != 2 or corners.shape[0] != 4:
        got = tuple(corners.shape) if torch.is_tensor(corners) else type(corners).__name__
        raise PplGenError(f"corners: need 4 latent points of the same shape (4, Z), got {got}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise PplGenError(f"n must be an integer >= 2, got {n!r}")
    tl, tr, bl, br = corners
    left = interpolate(tl, bl, n, method)  # (n, Z)
    right = interpolate(tr, br, n, method)
    rows = interpolate(left, right, n, method)  # (n cols, n rows, Z)
    return rows.transpose(0, 1).reshape(n * n, -1)
