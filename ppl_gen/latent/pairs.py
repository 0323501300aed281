"""Encoder/decoder pairs: one interface to the latent space of every model in ppl_gen.

Every latent-space tool (:mod:`ppl_gen.latent`) works on an :class:`EncoderDecoder`: an
``encode`` map from data rows to latent codes (the posterior mean ``E_q[z | x]`` for VAEs,
the code ``f(x)`` for autoencoders; ``None`` for decoder-only generators such as GANs) and
a ``decode`` map from codes to data space (the decoder mean / reconstruction).
Conditional models (the CVAE) take the labels ``y: (N,)`` as a second argument of both.

:func:`load_pair` reads a checkpoint and dispatches on ``state.get("kind",
"latent-variable")`` through a registry that other model families extend with
:func:`register_pair_loader` (e.g. GAN generators: ``encode=None``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ppl_gen.core.checkpoint import load_checkpoint
from ppl_gen.core.device import resolve_device
from ppl_gen.core.errors import PplGenError

PairLoader = Callable[[str, dict, torch.device], "EncoderDecoder"]
PAIR_LOADERS: dict[str, PairLoader] = {}


@dataclass
class EncoderDecoder:
    """An encoder/decoder pair in data space.

    Attributes:
        encode: ``encode(x: (N, D)[, y: (N,)]) -> (N, Z)``, or ``None`` for decoder-only
            models (tools that need an encoder then raise :class:`PplGenError`).
        decode: ``decode(z: (N, Z)[, y: (N,)]) -> (N, D)`` in data space (e.g. Bernoulli
            means in [0, 1]).
        latent_dim: ``Z``.
        image_shape: display shape of a decoded row, e.g. ``(28, 28)``.
        num_classes: ``C`` for conditional models, whose ``encode``/``decode`` need the
            labels ``y``; ``None`` otherwise.
        kind: the checkpoint kind (``"latent-variable"``, ``"autoencoder"``, ``"cvae"``...).
        data: how the model's training data was loaded (``{"name", "root", "binarize",
            "seed"}``), or ``None`` when unknown.
        device: where ``encode``/``decode`` run.
        prior: the latent distribution the model samples from: ``"standard-normal"``
            (VAEs, CVAEs, GAN generators) or ``None`` for a plain autoencoder, which has no
            prior (latent tools then fit a Gaussian to its training codes).
    """

    encode: Callable[..., torch.Tensor] | None
    decode: Callable[..., torch.Tensor]
    latent_dim: int
    image_shape: tuple[int, ...]
    num_classes: int | None = None
    kind: str = ""
    data: dict | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    prior: str | None = "standard-normal"

    @property
    def data_dim(self) -> int:
        """``D``, values per decoded row."""
        n = 1
        for s in self.image_shape:
            n *= int(s)
        return n

    @property
    def conditional(self) -> bool:
        """Whether ``encode``/``decode`` need labels."""
        return self.num_classes is not None

    def _labels(self, y: torch.Tensor | None, n: int, what: str) -> torch.Tensor | None:
        if not self.conditional:
            return None
        if y is None:
            raise PplGenError(
                f"label: this {self.kind} checkpoint is conditional; {what} needs a label "
                f"in 0..{self.num_classes - 1} for every point"
            )
        y = torch.as_tensor(y, device=self.device).long().reshape(-1)
        if y.numel() == 1 and n != 1:
            y = y.expand(n)
        if y.shape[0] != n:
            raise PplGenError(f"label: expected {n} labels, got {y.shape[0]}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise PplGenError(f"label must be in 0..{self.num_classes - 1}")
        return y

    @torch.no_grad()
    def encode_rows(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Codes ``(N, Z)`` of data rows ``x: (N, D)`` (labels ``y`` for conditional pairs).

        Raises:
            PplGenError: if the pair has no encoder, ``x`` has the wrong width, or labels
                are missing for a conditional pair.
        """
        if self.encode is None:
            raise PplGenError(
                f"CHECKPOINT: this {self.kind or 'model'} checkpoint has no encoder (decoder "
                "only); this tool needs one (use a VAE, CVAE or autoencoder checkpoint, or "
                "give latent points with z_from/z_to where accepted)"
            )
        if not torch.is_tensor(x) or x.dim() < 2 or x[0].numel() != self.data_dim:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise PplGenError(
                f"data: the checkpoint encodes rows of {self.data_dim} values "
                f"(image shape {self.image_shape}), got {got}"
            )
        x = x.reshape(x.shape[0], -1).to(self.device)
        labels = self._labels(y, x.shape[0], "encoding")
        z = self.encode(x) if labels is None else self.encode(x, labels)
        return z.detach()

    @torch.no_grad()
    def decode_rows(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Data-space rows ``(N, D)`` of codes ``z: (N, Z)`` (labels for conditional pairs).

        Raises:
            PplGenError: if ``z`` does not have ``Z`` columns (``latent_dim`` mismatch) or
                labels are missing for a conditional pair.
        """
        check_latent(z, self.latent_dim)
        z = z.reshape(-1, self.latent_dim).to(self.device)
        labels = self._labels(y, z.shape[0], "decoding")
        out = self.decode(z) if labels is None else self.decode(z, labels)
        return out.detach().reshape(z.shape[0], -1)


def check_latent(z: torch.Tensor, latent_dim: int, what: str = "latent points") -> None:
    """Raise :class:`PplGenError` unless ``z`` is ``(..., latent_dim)``.

    The message names ``latent_dim``: the request's latent dimension does not match the
    checkpoint's.
    """
    if not torch.is_tensor(z) or z.dim() < 1 or z.shape[-1] != latent_dim:
        got = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
        raise PplGenError(
            f"latent_dim mismatch: the checkpoint's latent space has {latent_dim} "
            f"dimensions, the {what} have shape {got}"
        )


def register_pair_loader(kind: str, loader: PairLoader) -> PairLoader:
    """Register ``loader(path, state, device) -> EncoderDecoder`` for checkpoints with
    ``state["kind"] == kind`` (``"latent-variable"`` for checkpoints without a kind).
    Returns ``loader`` so it can be used as a decorator factory's result."""
    PAIR_LOADERS[kind] = loader
    return loader


def load_pair(checkpoint: str, device: str | torch.device = "auto") -> EncoderDecoder:
    """Read ``checkpoint`` and build its :class:`EncoderDecoder`.

    Raises:
        PplGenError: unreadable checkpoint (``CHECKPOINT``), no loader for its kind, or an
            unavailable ``device``.
    """
    dev = resolve_device(device)
    state = load_checkpoint(checkpoint, map_location=dev)
    kind = state.get("kind", "latent-variable")
    _register_builtin_loaders()
    if kind not in PAIR_LOADERS:
        raise PplGenError(
            f"CHECKPOINT: no encoder/decoder loader for checkpoints of kind {kind!r} "
            f"(known: {', '.join(sorted(PAIR_LOADERS))})"
        )
    return PAIR_LOADERS[kind](str(checkpoint), state, dev)


# --------------------------------------------------------------------------- built-in loaders
# The loaders import their model families when a checkpoint of that kind is opened, not at
# import time: this module is the registry that decoder-only families (GANs) register with,
# and it stays free of Pyro and of the model packages (none of them imports it, so these
# imports form no cycle).


def _vae_pair(path: str, state: dict, device: torch.device) -> EncoderDecoder:
    spec = state.get("spec") or {}
    if (spec.get("model") or {}).get("image_dim") is not None:  # a CVAE without its kind tag
        return _cvae_pair(path, state, device)
    from ppl_gen.infer.evaluation import load_trained

    model, guide, state = load_trained(path, device)
    model.eval()
    guide.eval()
    site = getattr(model, "latent_site", "z")

    def encode(x: torch.Tensor) -> torch.Tensor:
        return guide.encode(x)[site][0]

    from ppl_gen.lvm.priors import StandardNormalPrior

    has_encoder = hasattr(guide, "encode") and not getattr(guide, "is_local", False)
    prior = getattr(model, "prior", None)
    standard = prior is None or isinstance(prior, StandardNormalPrior)
    return EncoderDecoder(
        encode=encode if has_encoder else None,
        decode=model.decode_mean,
        latent_dim=int(model.latent_dim),
        image_shape=tuple(model.image_shape),
        kind="latent-variable",
        data=spec.get("data"),
        device=device,
        prior="standard-normal" if standard else None,  # another prior: fit to the codes
    )


def _autoencoder_pair(path: str, state: dict, device: torch.device) -> EncoderDecoder:
    from ppl_gen.autoencoders.build import load_autoencoder

    model, state = load_autoencoder(path, device)
    return EncoderDecoder(
        encode=model.encode,
        decode=model.decode,
        latent_dim=model.latent_dim,
        image_shape=tuple(model.image_shape),
        kind="autoencoder",
        data=(state.get("spec") or {}).get("data"),
        device=device,
        prior=None,
    )


def _cvae_pair(path: str, state: dict, device: torch.device) -> EncoderDecoder:
    from ppl_gen.autoencoders.conditional import load_cvae
    from ppl_gen.models.cvae import one_hot

    model, guide, state = load_cvae(path, device)

    def encode(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return guide.encode(x, one_hot(y, model.num_classes, x))[0]

    return EncoderDecoder(
        encode=encode,
        decode=model.decode_mean,
        latent_dim=model.latent_dim,
        image_shape=tuple(model.image_shape),
        num_classes=model.num_classes,
        kind="cvae",
        data=(state.get("spec") or {}).get("data"),
        device=device,
    )


def _register_builtin_loaders() -> None:
    PAIR_LOADERS.setdefault("latent-variable", _vae_pair)
    PAIR_LOADERS.setdefault("autoencoder", _autoencoder_pair)
    PAIR_LOADERS.setdefault("cvae", _cvae_pair)


_register_builtin_loaders()
