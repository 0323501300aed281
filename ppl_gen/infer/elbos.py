"""The Pyro ELBOs SVI training can use, by name (``TrainConfig.elbo``).

``trace`` is ``Trace_ELBO`` (Monte Carlo KL), ``analytic-kl`` ``TraceMeanField_ELBO``
(closed-form KL where available; Kingma & Welling 2014, eq. 10), ``jit`` / ``jit-analytic-kl``
their ``torch.jit`` compiled versions, and ``enum`` ``TraceEnum_ELBO`` (discrete latents
summed out exactly).  Each returns the differentiable negative ELBO in nats, scaled to the
whole training set by the data plate.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro.infer import (
    JitTrace_ELBO,
    JitTraceMeanField_ELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceMeanField_ELBO,
)

from ppl_gen.core.errors import PplGenError
from ppl_gen.infer.bounds import max_plate_nesting
from ppl_gen.infer.enumeration import enum_elbo, enumerated_sites, enumerating


class _JitTraceMeanFieldELBO(JitTraceMeanField_ELBO):
    """``JitTraceMeanField_ELBO`` that compiles once.

    Pyro 1.9.2's ``JitTraceMeanField_ELBO.differentiable_loss`` tests for a cached
    ``_loss_and_surrogate_loss`` but stores its compiled closure as ``_differentiable_loss``,
    so it re-traces with ``torch.jit.trace`` on every step (3-4x slower than eager).  Pointing
    the attribute it tests at the closure it stores makes the cache hit.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
        self._loss_and_surrogate_loss = getattr(self, "_differentiable_loss", None)
        return super().differentiable_loss(model, guide, *args, **kwargs)


ELBOS = {
    "trace": Trace_ELBO,
    "analytic-kl": TraceMeanField_ELBO,
    "jit": JitTrace_ELBO,
    "jit-analytic-kl": _JitTraceMeanFieldELBO,
    "enum": TraceEnum_ELBO,
}


def make_elbo(name: str, num_particles: int = 1):
    """The Pyro ELBO object for ``name`` (module docs) with ``num_particles`` vectorised
    particles per datapoint.

    Raises:
        PplGenError: an unknown ``name``.
    """
    if name not in ELBOS:
        raise PplGenError(f"elbo must be one of {', '.join(ELBOS)}, got {name!r}")
    if name == "enum":
        # Discrete sites marked infer={"enumerate": "parallel"} are summed out exactly.
        return TraceEnum_ELBO(max_plate_nesting=1, num_particles=num_particles)
    kwargs = {"num_particles": num_particles, "vectorize_particles": num_particles > 1}
    if name.startswith("jit"):
        kwargs["ignore_jit_warnings"] = True  # shape checks are constant within a trace
    return ELBOS[name](**kwargs)


def training_elbo(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    indices: torch.Tensor,
    size: int,
    name: str,
    num_particles: int = 1,
) -> tuple:
    """The Pyro ELBO for ``name`` and the model to give it.

    A model with discrete latent sites that the guide does not sample
    (:func:`ppl_gen.infer.enumeration.enumerated_sites`) is trained with ``TraceEnum_ELBO``
    on the model marked for parallel enumeration, whatever ``name`` says: that marginal ELBO
    is the one the bounds report.  Otherwise ``(make_elbo(name, num_particles), model)``.

    Raises:
        PplGenError: a discrete latent site that cannot be summed out (naming it).
    """
    summed = enumerated_sites(model, guide, x, indices, size)
    if not summed:
        return make_elbo(name, num_particles), model
    nesting = max_plate_nesting(model, guide, x, indices, size)
    return enum_elbo(nesting, num_particles), enumerating(model)
