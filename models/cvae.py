"""Conditional variational autoencoder (Sohn, Lee & Yan 2015, "Learning Structured Output
Representation using Deep Conditional Generative Models", NeurIPS).

Generative model ``p(x | z, y) p(z)`` with ``p(z) = N(0, I)`` and a decoder conditioned on
the label ``y``; the guide (:class:`ppl_gen.guides.ConditionalEncoderGuide`) is
``q(z | x, y)``.  The conditional ELBO of Sohn et al. (2015, eq. 4 with the prior network
replaced by the fixed ``p(z)``) is then a lower bound on ``log p(x | y)``, and so is the
IWAE-K bound (Burda et al. 2016, eq. 8).

To reuse ppl_gen's trainer and bounds unchanged, the label travels *inside* each data row:
a row is ``[x | one_hot(y)]`` (``D + C`` values; :func:`with_label_columns` builds such
splits), the model splits it, conditions on the one-hot part and puts the likelihood on the
image part only.  Bounds computed by :func:`ppl_gen.evaluate_bounds` on such rows are
therefore bounds on ``log p(x | y)`` in nats per image.  Dynamic binarisation leaves the
one-hot part unchanged (Bernoulli(0) = 0, Bernoulli(1) = 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pyro
import torch
from torch import nn
from torch.nn import functional as F

from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.core.naming import unique_scope
from ppl_gen.data.datasets import DataSplits
from ppl_gen.lvm.likelihoods import make_likelihood
from ppl_gen.lvm.nets import mlp
from ppl_gen.lvm.plates import data_plate
from ppl_gen.lvm.priors import make_prior


def one_hot(y: torch.Tensor, num_classes: int, like: torch.Tensor | None = None) -> torch.Tensor:
    """``(N,)`` int labels -> ``(N, C)`` float one-hot rows (dtype/device of ``like``).

    Raises:
        PplGenError: naming ``label`` if a label is outside ``0..C-1``.
    """
    y = torch.as_tensor(y)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise PplGenError(
            f"label: labels must be in 0..{num_classes - 1}, got values in "
            f"{int(y.min())}..{int(y.max())}"
        )
    out = F.one_hot(y.long(), num_classes)
    if like is not None:
        return out.to(device=like.device, dtype=like.dtype)
    return out.float()


def with_label_columns(splits: DataSplits, num_classes: int | None = None) -> DataSplits:
    """Append ``one_hot(y)`` to every row: ``(n, D)`` -> ``(n, D + C)`` for each split.

    Args:
        splits: a labelled dataset (MNIST, digits, or a ``.npz`` with ``y``).
        num_classes: ``C`` (default ``max label + 1`` over all splits).

    Returns:
        A :class:`~ppl_gen.data.datasets.DataSplits` with the label columns appended, the same
        labels
        and binarisation, and ``image_shape = (D + C,)``.

    Raises:
        PplGenError: naming ``data`` if the dataset has no labels.
    """
    if splits.train_labels is None:
        raise PplGenError(
            f"data {splits.name}: the conditional VAE needs labelled data (MNIST, digits, "
            "or a .npz with labels 'y')"
        )
    labels = [
        t for t in (splits.train_labels, splits.val_labels, splits.test_labels) if t is not None
    ]
    c = num_classes or int(max(int(t.max()) for t in labels if t.numel())) + 1

    def cat(x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return torch.cat([x, one_hot(y, c, like=x)], dim=1)

    return replace(
        splits,
        train=cat(splits.train, splits.train_labels),
        val=cat(splits.val, splits.val_labels),
        test=cat(splits.test, splits.test_labels),
        image_shape=(splits.data_dim + c,),
    )


class CVAE(nn.Module):
    """``p(x | z, y) p(z)`` with an MLP decoder on ``[z | one_hot(y)]``.

    Args:
        image_dim: ``D``, values per image (784 for MNIST, 64 for the digits).
        num_classes: ``C``, number of labels.
        latent_dim: ``Z``.
        hidden: decoder hidden widths (the guide mirrors them).
        likelihood: ``bernoulli`` (binary or grey-level images) or ``gaussian``.
        image_shape: display shape of an image (default ``(D,)``).

    Shapes: a data row is ``(D + C,)`` = image then one-hot label; ``z: (batch, Z)``.

    Sites: ``"z"`` (latent, event ``(Z,)``) and ``"x"`` (observed image, event ``(D,)``).

    Raises:
        PplGenError: non-positive sizes (``latent_dim``, ``hidden``) or an unknown
            likelihood.
    """

    latent_site = "z"

    def __init__(
        self,
        image_dim: int,
        num_classes: int = 10,
        latent_dim: int = 20,
        hidden: Sequence[int] = (400,),
        likelihood: str = "bernoulli",
        image_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.image_dim = require_positive_int("image_dim", image_dim)
        self.num_classes = require_positive_int("num_classes", num_classes)
        self.latent_dim = require_positive_int("latent_dim", latent_dim)
        self.hidden = tuple(require_positive_int("hidden", int(w)) for w in hidden)
        self.likelihood_name = likelihood
        self.likelihood = make_likelihood(likelihood, image_dim)
        self.prior = make_prior("normal", latent_dim)
        self.decoder = mlp(
            latent_dim + num_classes, self.hidden, image_dim * self.likelihood.params_per_dim
        )
        self.image_shape = tuple(image_shape) if image_shape is not None else (image_dim,)
        self.scope = unique_scope(type(self).__name__)

    @property
    def data_dim(self) -> int:
        """Values per data row, ``D + C``."""
        return self.image_dim + self.num_classes

    @property
    def latent_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{"z": (Z,)}``."""
        return {self.latent_site: (self.latent_dim,)}

    def split(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(batch, D + C)`` rows -> image ``(batch, D)`` and one-hot ``(batch, C)``.

        Raises:
            PplGenError: if the rows do not have ``D + C`` values.
        """
        if not torch.is_tensor(rows) or rows.dim() != 2 or rows.shape[1] != self.data_dim:
            got = tuple(rows.shape) if torch.is_tensor(rows) else type(rows).__name__
            raise PplGenError(
                f"x: CVAE rows must be (N, {self.data_dim}) = image ({self.image_dim}) + "
                f"one-hot label ({self.num_classes}), got {got}"
            )
        return rows[:, : self.image_dim], rows[:, self.image_dim :]

    def decoder_output(self, z: torch.Tensor, y_onehot: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters of ``p(x | z, y)``: ``z: (..., batch, Z)``,
        ``y_onehot: (batch, C)`` -> ``(..., batch, D * params_per_dim)``."""
        y = y_onehot.expand(*z.shape[:-1], self.num_classes)
        return self.decoder(torch.cat([z, y], dim=-1))

    def forward(
        self, x: torch.Tensor, indices: torch.Tensor | None = None, size: int | None = None
    ) -> torch.Tensor:
        """The Pyro model on rows ``x: (batch, D + C)``; returns ``z: (..., batch, Z)``."""
        pyro.module(self.scope, self)
        image, y = self.split(x)
        with data_plate(image, indices, size):
            z = pyro.sample(self.latent_site, self.prior(image))
            pyro.sample("x", self.likelihood(self.decoder_output(z, y)), obs=image)
        return z

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean of ``p(x | z, y)``: ``z: (n, Z)``, ``y: (n,)`` int labels -> ``(n, D)``."""
        return self.likelihood.mean(self.decoder_output(z, one_hot(y, self.num_classes, z)))

    @torch.no_grad()
    def sample(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Class-conditional samples: one image mean per label, ``z ~ p(z)``.

        Args:
            y: ``(n,)`` int labels in ``0..C-1``.
            generator: optional generator on the model's device.

        Returns:
            ``(n, D)`` decoder means ``E[x | z, y]`` (Bernoulli probabilities).
        """
        p = next(self.parameters())
        y = torch.as_tensor(y, device=p.device)
        z = torch.randn(
            y.shape[0], self.latent_dim, generator=generator, device=p.device, dtype=p.dtype
        )
        return self.decode_mean(z, y)

    def spec(self) -> dict:
        """JSON-able constructor arguments."""
        return {
            "image_dim": self.image_dim,
            "num_classes": self.num_classes,
            "latent_dim": self.latent_dim,
            "hidden": list(self.hidden),
            "likelihood": self.likelihood_name,
            "image_shape": list(self.image_shape),
        }
