"""The deterministic autoencoder interface shared by the MLP and convolutional variants.

An autoencoder is an encoder ``f: x -> h`` and a decoder ``g: h -> x_hat`` trained to make
``g(f(x))`` reproduce ``x`` (Goodfellow, Bengio & Courville 2016, ch. 14).  Rows are flat
vectors ``x: (batch, D)`` everywhere in ppl_gen; the convolutional variant reshapes them to
images internally.

Output conventions (``output=``):

* ``"sigmoid"`` -- the decoder produces logits; the reconstruction is ``sigmoid(logits)`` in
  [0, 1] and the reconstruction loss is the Bernoulli cross-entropy summed over the D values
  (nats per datapoint).  For grey-level images in [0, 1].
* ``"linear"`` -- the decoder output is the reconstruction itself and the loss is the squared
  error summed over the D values.  For real-valued data (and the linear autoencoder, whose
  optimum spans the principal subspace; Baldi & Hornik 1989).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ppl_gen.autoencoders.penalties import contractive_penalty
from ppl_gen.core.errors import PplGenError

OUTPUTS = ("sigmoid", "linear")
ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "elu": nn.ELU}


def check_output(output: str) -> str:
    """Return ``output`` if it is a known output convention.

    Raises:
        PplGenError: naming ``output`` otherwise.
    """
    if output not in OUTPUTS:
        raise PplGenError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    return output


def activation_class(name: str) -> type[nn.Module]:
    """The ``nn.Module`` class of a hidden-layer activation name.

    Raises:
        PplGenError: naming ``activation`` for an unknown name.
    """
    if name not in ACTIVATIONS:
        raise PplGenError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


class Autoencoder(nn.Module):
    """Base class: subclasses set ``encoder`` / ``decoder`` modules and the attributes below.

    Attributes:
        data_dim: ``D``, values per (flattened) datapoint.
        latent_dim: ``Z``, size of the code ``h = f(x)``.
        image_shape: display shape of a row, ``(H, W)`` for grey images or ``(D,)``.
        output: ``"sigmoid"`` or ``"linear"`` (see the module docstring).
    """

    data_dim: int
    latent_dim: int
    image_shape: tuple[int, ...]
    output: str
    encoder: nn.Module
    decoder: nn.Module

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(x) or x.dim() < 2 or x[0].numel() != self.data_dim:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise PplGenError(
                f"x: expected rows of {self.data_dim} values, shape (N, {self.data_dim}), got {got}"
            )
        return x.reshape(x.shape[0], self.data_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Code ``h = f(x)``: ``x: (batch, D)`` (or ``(batch, *image_shape)``) ->
        ``(batch, Z)``.

        Raises:
            PplGenError: if the rows of ``x`` do not have ``D`` values.
        """
        return self.encoder(self._flat(x))

    def decode_raw(self, h: torch.Tensor) -> torch.Tensor:
        """Decoder output before the output nonlinearity: logits for ``"sigmoid"``, the
        reconstruction for ``"linear"``.  ``h: (batch, Z)`` -> ``(batch, D)``."""
        if not torch.is_tensor(h) or h.dim() != 2 or h.shape[-1] != self.latent_dim:
            got = tuple(h.shape) if torch.is_tensor(h) else type(h).__name__
            raise PplGenError(
                f"latent: expected codes of shape (N, {self.latent_dim}) (latent_dim "
                f"{self.latent_dim}), got {got}"
            )
        return self.decoder(h)

    def to_data_space(self, raw: torch.Tensor) -> torch.Tensor:
        """Map :meth:`decode_raw` output to data space (sigmoid or identity)."""
        return torch.sigmoid(raw) if self.output == "sigmoid" else raw

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``g(h)`` in data space: ``(batch, Z)`` -> ``(batch, D)``."""
        return self.to_data_space(self.decode_raw(h))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h, raw)``: the code ``(batch, Z)`` and :meth:`decode_raw` of it ``(batch, D)``."""
        h = self.encode(x)
        return h, self.decode_raw(h)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``g(f(x))`` in data space, ``(batch, D)``."""
        return self.decode(self.encode(x))

    def contractive_penalty(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``||J_f(x_n)||_F^2`` per row, ``(batch, D) -> (batch,)`` (Rifai et al.
        2011, eq. 3), by :func:`ppl_gen.autoencoders.penalties.contractive_penalty`."""
        return contractive_penalty(self.encode, x)

    def reconstruction_loss(self, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-datapoint reconstruction loss ``(batch,)``: Bernoulli cross-entropy of the
        logits ``raw`` against ``target`` in [0, 1] summed over D (nats) for ``"sigmoid"``,
        squared error summed over D for ``"linear"``."""
        target = target.reshape(raw.shape)
        if self.output == "sigmoid":
            return F.binary_cross_entropy_with_logits(raw, target, reduction="none").sum(-1)
        return (raw - target).pow(2).sum(-1)

    def spec(self) -> dict:
        """JSON-able description from which :func:`ppl_gen.autoencoders.build_autoencoder`
        rebuilds the same architecture."""
        raise NotImplementedError
