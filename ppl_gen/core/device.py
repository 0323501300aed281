"""The one device layer.

Every trainer in ppl_gen (Pyro SVI, and later the adversarial ones) asks this module which
device to use and moves modules and batches with it.  Models never choose a device: they
build every tensor (priors included) on the device of the data they are given, so the same
code runs unchanged on CPU, ``cuda`` or ``cuda:N``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

import torch
from torch import nn

from ppl_gen.core.errors import PplGenError

T = TypeVar("T")

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_SPEC = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn a device request into a :class:`torch.device`.

    Args:
        spec: ``"auto"`` (CUDA device 0 when available, else CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``; a :class:`torch.device` is checked the same way; ``None`` means
            ``"auto"``.

    Returns:
        The resolved device; ``cuda`` is normalised to ``cuda:0``.

    Raises:
        PplGenError: if ``spec`` is not one of the accepted forms, if CUDA is requested but
            not available, or if ``cuda:N`` names a device that does not exist.
    """
    if spec is None:
        spec = "auto"
    text = str(spec).strip().lower()
    if not _SPEC.match(text):
        raise PplGenError(f"device must be {DEVICE_CHOICES}, got {str(spec)!r}")
    if text == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise PplGenError(
            f"device {text}: CUDA was requested but is not available on this machine "
            "(use device cpu or auto)"
        )
    index = int(text.split(":")[1]) if ":" in text else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise PplGenError(f"device {text}: only {count} CUDA device(s) present (cuda:0..)")
    return torch.device("cuda", index)


def to_device(obj: T, device: torch.device | str) -> T:
    """Move a tensor, module, or a (nested) tuple / list / dict of them to ``device``.

    Non-tensor leaves are returned unchanged; modules are moved in place and returned.
    """
    device = torch.device(device)
    if isinstance(obj, (torch.Tensor, nn.Module)):
        return obj.to(device)  # type: ignore[return-value]
    if isinstance(obj, Mapping):
        return type(obj)({k: to_device(v, device) for k, v in obj.items()})  # type: ignore[call-arg]
    if isinstance(obj, (list, tuple)):
        moved = [to_device(v, device) for v in obj]
        return type(obj)(moved) if not hasattr(obj, "_fields") else type(obj)(*moved)  # type: ignore[return-value]
    return obj


def module_device(module: Any, default: torch.device | None = None) -> torch.device:
    """Device of the first parameter or buffer of ``module`` (``default`` or CPU if none)."""
    if isinstance(module, nn.Module):
        for tensor in list(module.parameters()) + list(module.buffers()):
            return tensor.device
    return default if default is not None else torch.device("cpu")


def describe(device: torch.device) -> str:
    """Human-readable name of ``device`` for reports (e.g. ``cuda:0 (NVIDIA H200)``)."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
