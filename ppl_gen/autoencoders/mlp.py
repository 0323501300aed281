"""Fully connected autoencoder ``D -> hidden... -> Z -> reversed(hidden)... -> D``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ppl_gen.autoencoders.base import Autoencoder, activation_class, check_output
from ppl_gen.autoencoders.penalties import contractive_penalty, mlp_contractive_penalty
from ppl_gen.core.errors import require_positive_int
from ppl_gen.lvm.nets import mlp


class MLPAutoencoder(Autoencoder):
    """MLP encoder and mirrored MLP decoder with a linear code layer.

    With ``hidden=()`` and ``output="linear"`` it is the *linear* autoencoder
    ``x_hat = W_d (W_e x + b_e) + b_d``: trained with squared error, its decoder columns span
    the same subspace as the leading ``Z`` principal components (Baldi & Hornik 1989;
    Bourlard & Kamp 1988).

    Args:
        data_dim: ``D`` (784 for MNIST, 64 for the digits).
        latent_dim: ``Z``.
        hidden: encoder hidden widths (the decoder uses them reversed).
        activation: hidden nonlinearity: ``relu``, ``sigmoid``, ``tanh`` or ``elu``.
        output: ``"sigmoid"`` (logits, cross-entropy) or ``"linear"`` (squared error).
        image_shape: display shape of a row (default ``(D,)``).

    Shapes: ``x: (batch, D)``, ``h: (batch, Z)``.

    Raises:
        PplGenError: for non-positive sizes (``latent_dim``, ``hidden``) or unknown
            ``activation`` / ``output``.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 32,
        hidden: Sequence[int] = (256,),
        activation: str = "relu",
        output: str = "sigmoid",
        image_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.data_dim = require_positive_int("data_dim", data_dim)
        self.latent_dim = require_positive_int("latent_dim", latent_dim)
        self.hidden = tuple(require_positive_int("hidden", int(w)) for w in hidden)
        self.activation = activation
        act = activation_class(activation)
        self.output = check_output(output)
        self.image_shape = tuple(image_shape) if image_shape is not None else (data_dim,)
        self.encoder = mlp(data_dim, self.hidden, latent_dim, act)
        self.decoder = mlp(latent_dim, self.hidden[::-1], data_dim, act)

    def contractive_penalty(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``||J_f(x_n)||_F^2`` per row: the closed form of
        :func:`~ppl_gen.autoencoders.penalties.mlp_contractive_penalty` for at most one
        hidden layer, the vectorised full Jacobian otherwise."""
        flat = self._flat(x)
        closed = mlp_contractive_penalty(self.encoder, flat)
        return closed if closed is not None else contractive_penalty(self.encode, flat)

    def spec(self) -> dict:
        return {
            "arch": "mlp",
            "data_dim": self.data_dim,
            "latent_dim": self.latent_dim,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "output": self.output,
            "image_shape": list(self.image_shape),
        }
