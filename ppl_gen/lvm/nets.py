"""Small network builders shared by models and guides."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn


def mlp(
    in_dim: int,
    hidden: Sequence[int],
    out_dim: int,
    activation: Callable[[], nn.Module] = nn.ReLU,
) -> nn.Sequential:
    """Multilayer perceptron ``in_dim -> hidden... -> out_dim`` with ``activation()`` after
    each hidden layer and a linear output (``x: (..., in_dim) -> (..., out_dim)``, any
    leading batch dimensions).  ``activation`` is a module class or any zero-argument
    factory, e.g. ``functools.partial(nn.LeakyReLU, 0.2)`` for the GAN networks."""
    layers: list[nn.Module] = []
    prev = in_dim
    for width in hidden:
        layers += [nn.Linear(prev, width), activation()]
        prev = width
    layers.append(nn.Linear(prev, out_dim))
    return nn.Sequential(*layers)
