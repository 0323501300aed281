"""One likelihood axis for GANs and VAEs (Wu, Burda, Salakhutdinov & Grosse 2017).

A decoder-based generator ``G: z -> x`` (a GAN generator, a VAE decoder's mean) defines a
density once an observation model is put around it:

    p(z) = N(0, I),   p(x | z) = N(x; G(z), sigma^2 I_D)

(Wu et al. 2017, sec. 2.1).  ``log p(x)`` of test images under this model is estimated by
AIS from the prior (:func:`~ppl_gen.infer.ais.evaluate_ais`; Wu et al. sec. 2.2), so GANs,
VAEs and any other generator of the same images are ranked by one number: nats per image,
for images with pixel values in [0, 1] (a *density* of continuous pixel values, so it can
be positive; only differences between models on the same images mean something).

``sigma`` is chosen on validation images (Wu et al.: "the variance parameter ... tuned on
the validation set"): a grid search, each candidate scored by a short forward AIS on the
validation images, the best mean kept (:func:`select_sigma`).  A short AIS under-estimates
more for small ``sigma`` (sharper posteriors), which biases the choice towards larger
``sigma``; the validation settings are recorded with the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_gen.core.errors import PplGenError, require, require_positive_int
from ppl_gen.infer.ais import AISEstimate, evaluate_ais
from ppl_gen.lvm.plates import data_plate

DEFAULT_SIGMAS = (0.02, 0.05, 0.1, 0.2)


class GaussianObservationModel(nn.Module):
    """Pyro model ``p(z) p(x | z) = N(z; 0, I) N(x; G(z), sigma^2 I)`` around a generator.

    Args:
        mean_fn: ``G``, maps ``z: (n, Z)`` to flattened means ``(n, D)`` (differentiable).
        latent_dim: ``Z``.
        data_dim: ``D``.
        sigma: observation standard deviation (> 0), in pixel units.
        prior: optional ``nn.Module`` returning ``p(z)`` for a batch ``x`` (a VAE's prior);
            default ``N(0, I_Z)``.
        modules: the networks inside ``mean_fn`` (registered so ``.to`` / ``.eval`` reach
            them; their parameters stay fixed: the model never calls ``pyro.module``).

    Sites: ``"z"`` (latent, event ``(Z,)``), ``"x"`` (observed, event ``(D,)``).

    Raises:
        PplGenError: if ``latent_dim`` / ``data_dim`` are not positive integers or ``sigma``
            is not positive.
    """

    latent_site = "z"

    def __init__(
        self,
        mean_fn: Callable[[torch.Tensor], torch.Tensor],
        latent_dim: int,
        data_dim: int,
        sigma: float,
        prior: nn.Module | None = None,
        modules: Sequence[nn.Module] = (),
    ) -> None:
        super().__init__()
        self.mean_fn = mean_fn
        self.latent_dim = require_positive_int("latent_dim", latent_dim)
        self.data_dim = require_positive_int("data_dim", data_dim)
        if not (isinstance(sigma, (int, float)) and sigma > 0):
            raise PplGenError(f"sigma: must be a positive number, got {sigma!r}")
        self.sigma = float(sigma)
        self.prior = prior
        self.nets = nn.ModuleList(modules)

    @property
    def latent_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{"z": (Z,)}``."""
        return {"z": (self.latent_dim,)}

    def with_sigma(self, sigma: float) -> GaussianObservationModel:
        """The same generator with another ``sigma`` (shares the networks)."""
        return GaussianObservationModel(
            self.mean_fn, self.latent_dim, self.data_dim, sigma, self.prior, list(self.nets)
        )

    def forward(self, x: torch.Tensor, indices=None, size=None) -> torch.Tensor:
        """The Pyro model. ``x: (batch, ...)`` with ``D`` values per row in [0, 1]."""
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.data_dim:
            raise PplGenError(f"x: rows must have {self.data_dim} values, got {tuple(x.shape)}")
        with data_plate(flat, indices, size):
            if self.prior is not None:
                p_z = self.prior(flat)
            else:
                zeros = flat.new_zeros(self.latent_dim)
                p_z = dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)
            z = pyro.sample("z", p_z)
            mean = self.mean_fn(z.reshape(-1, self.latent_dim))
            mean = mean.reshape(z.shape[:-1] + (self.data_dim,))
            pyro.sample("x", dist.Normal(mean, self.sigma).to_event(1), obs=flat)
        return z


def from_generator(generator: nn.Module, sigma: float = 0.1) -> GaussianObservationModel:
    """Wrap a ppl_gen GAN generator (``forward(z: (n, Z)) -> (n, C, H, W)`` in [-1, 1]; see
    :mod:`ppl_gen.gan`) as :class:`GaussianObservationModel` on images in [0, 1]
    (``G(z) = (generator(z) + 1) / 2``).  Use it in eval mode (fixed noise, frozen batch
    norm).

    Raises:
        PplGenError: for a class-conditional generator (it needs labels).
    """
    if getattr(generator, "num_classes", None):
        raise PplGenError(
            "generator: class-conditional generators need labels; the likelihood axis "
            "takes unconditional generators (gan, dcgan, stylegan)"
        )
    c, h, w = generator.image_shape

    def mean_fn(z: torch.Tensor) -> torch.Tensor:
        return ((generator(z) + 1) / 2).reshape(z.shape[0], -1)

    return GaussianObservationModel(
        mean_fn, generator.latent_dim, c * h * w, sigma, None, [generator]
    )


def from_vae_decoder(model: nn.Module, sigma: float = 0.1) -> GaussianObservationModel:
    """A :class:`~ppl_gen.lvm.declare.LatentVariableModel` (VAE) with its likelihood replaced
    by ``N(decoder mean, sigma^2 I)``: ``G(z) = likelihood.mean(decoder(z))`` (the Bernoulli
    means for a binary VAE), its own prior ``p(z)``."""
    for attr in ("decoder", "likelihood", "prior", "latent_dim", "data_dim"):
        if not hasattr(model, attr):
            raise PplGenError(f"model: a declared VAE needs .{attr}; got {type(model).__name__}")

    def mean_fn(z: torch.Tensor) -> torch.Tensor:
        return model.likelihood.mean(model.decoder(z))

    return GaussianObservationModel(
        mean_fn, model.latent_dim, model.data_dim, sigma, model.prior, [model]
    )


def select_sigma(
    model: GaussianObservationModel,
    x_val: torch.Tensor,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    *,
    steps: int = 100,
    chains: int = 8,
    leapfrog: int = 5,
    seed: int | None = 0,
    refine: int = 0,
) -> tuple[float, dict[float, float]]:
    """Grid search for ``sigma`` maximising the mean validation AIS ``log p(x)``, then
    ``refine`` rounds around the best: its neighbours ``best x 2^(+-1/4)`` (widening past a
    grid edge as the best moves), each scored once.

    A ``sigma`` off by a factor ``r`` costs about ``D (ln r)^2`` nats per image at the
    optimum (``D`` pixels), so a factor-2 grid can lose up to ~94 nats on 784 pixels and
    steps of ``2^(1/4)`` up to ~6 (half a step off).

    Args:
        model: the generator's observation model (its own ``sigma`` is ignored).
        x_val: ``(n, ...)`` validation images in [0, 1].
        sigmas: candidates (> 0).
        steps, chains, leapfrog, seed: the (short) AIS of each candidate.
        refine: refinement rounds (0: the grid only).

    Returns:
        ``(best sigma, {sigma: mean validation log p(x) in nats per image})``.

    Raises:
        PplGenError: an empty or non-positive ``sigmas``, a negative ``refine``, or bad AIS
            settings.
    """
    if not sigmas or any(not (isinstance(s, (int, float)) and s > 0) for s in sigmas):
        raise PplGenError(f"sigmas: must be positive numbers, got {list(sigmas)!r}")
    require(isinstance(refine, int) and refine >= 0, f"refine must be >= 0, got {refine!r}")
    scores: dict[float, float] = {}

    def score(s: float) -> None:
        if not any(math.isclose(s, t, rel_tol=1e-6) for t in scores):
            scores[float(s)] = evaluate_ais(
                model.with_sigma(s), x_val, steps=steps, chains=chains, leapfrog=leapfrog, seed=seed
            ).mean

    for s in sigmas:
        score(float(s))
    for _ in range(refine):
        best = max(scores, key=scores.get)
        for s in (best * 2**-0.25, best * 2**0.25):
            score(s)
        if max(scores, key=scores.get) == best:
            break
    return max(scores, key=scores.get), scores


@dataclass(frozen=True)
class GeneratorLikelihood:
    """Test log-likelihood of a generator under the Gaussian observation model.

    Attributes:
        sigma: the chosen ``sigma``.
        validation: ``{sigma: mean validation AIS log p(x)}`` (nats per image).
        test: the test-set :class:`~ppl_gen.infer.ais.AISEstimate` (``log_px: (N,)``).
    """

    sigma: float
    validation: dict[float, float]
    test: AISEstimate

    def summary(self) -> dict:
        """``test_log_likelihood`` (nats/image), its errors, ``sigma`` and the settings."""
        return {
            "test_log_likelihood": self.test.mean,
            "test_log_likelihood_se": self.test.se,
            "test_log_likelihood_mc_se": self.test.mc_se,
            "sigma": self.sigma,
            "sigma_validation": {str(k): v for k, v in self.validation.items()},
            "steps": self.test.steps,
            "chains": self.test.chains,
            "leapfrog": self.test.leapfrog,
            "n_test": int(self.test.log_px.numel()),
            "seconds": self.test.seconds,
        }


def generator_log_likelihood(
    model: GaussianObservationModel,
    x_val: torch.Tensor,
    x_test: torch.Tensor,
    *,
    steps: int = 1000,
    chains: int = 16,
    leapfrog: int = 10,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    val_steps: int | None = None,
    seed: int | None = 0,
    progress: bool | None = None,
    refine: int = 3,
) -> GeneratorLikelihood:
    """Wu et al. 2017's evaluation: choose ``sigma`` on ``x_val`` (:func:`select_sigma`
    with ``refine`` rounds at ratio ``2^(1/4)``, ``val_steps`` steps, default
    ``max(steps // 10, 10)``), then forward AIS from the prior on ``x_test`` with
    ``steps`` / ``chains`` / ``leapfrog``.

    Args:
        x_val, x_test: ``(n, ...)`` images in [0, 1], ``D`` values per row.

    Returns:
        :class:`GeneratorLikelihood` (nats per test image).

    Raises:
        PplGenError: bad settings (named).
    """
    require_positive_int("steps", steps)
    val_steps = max(steps // 10, 10) if val_steps is None else val_steps
    sigma, scores = select_sigma(
        model,
        x_val,
        sigmas,
        steps=val_steps,
        chains=min(chains, 8),
        leapfrog=leapfrog,
        seed=seed,
        refine=refine,
    )
    test = evaluate_ais(
        model.with_sigma(sigma),
        x_test,
        steps=steps,
        chains=chains,
        leapfrog=leapfrog,
        seed=seed,
        progress=progress,
    )
    return GeneratorLikelihood(sigma=sigma, validation=scores, test=test)


def generator_ais_metrics(
    generator: nn.Module,
    x_val: torch.Tensor,
    x_test: torch.Tensor,
    steps: int,
    chains: int,
    seed: int | None = 0,
) -> dict:
    """:func:`generator_log_likelihood` of a GAN generator (:func:`from_generator`) as the
    flat record ``ppl-gen evaluate`` writes: ``test_log_likelihood_ais`` (nats per test
    image, Gaussian observation model), ``_se`` (over images), ``_mc_se`` (over chains),
    ``ais_sigma``, ``ais_sigma_validation``, ``ais_steps``, ``ais_chains``,
    ``ais_leapfrog``, ``ais_seconds``, ``ais_n_validation``.

    Args:
        x_val, x_test: ``(n, C, H, W)`` images in [0, 1] on the generator's device.
    """
    result = generator_log_likelihood(
        from_generator(generator), x_val, x_test, steps=steps, chains=chains, seed=seed
    )
    s = result.summary()
    return {
        "test_log_likelihood_ais": s["test_log_likelihood"],
        "test_log_likelihood_ais_se": s["test_log_likelihood_se"],
        "test_log_likelihood_ais_mc_se": s["test_log_likelihood_mc_se"],
        "ais_observation_model": "gaussian",
        "ais_sigma": s["sigma"],
        "ais_sigma_validation": s["sigma_validation"],
        "ais_steps": steps,
        "ais_chains": chains,
        "ais_leapfrog": s["leapfrog"],
        "ais_seconds": s["seconds"],
        "ais_n_validation": int(x_val.shape[0]),
    }


__all__ = [
    "DEFAULT_SIGMAS",
    "generator_ais_metrics",
    "GaussianObservationModel",
    "GeneratorLikelihood",
    "from_generator",
    "from_vae_decoder",
    "generator_log_likelihood",
    "select_sigma",
]
