"""Find the per-datapoint latent sites of a model, so guides can be built from its shapes."""

from __future__ import annotations

from collections.abc import Callable

import pyro
import torch
from pyro import poutine
from pyro.poutine.subsample_messenger import _Subsample

from ppl_gen.core.errors import PplGenError
from ppl_gen.lvm.plates import DATA_PLATE


def local_latent_shapes(
    model: Callable, x: torch.Tensor, indices=None, size=None
) -> dict[str, tuple[int, ...]]:
    """Per-datapoint event shapes of the model's unobserved sample sites.

    Declared models report ``model.latent_shapes`` directly; for any other Pyro model the
    model is traced once on ``x: (batch, ...)`` (parameters and randomness blocked from the
    outside world).

    Returns:
        ``{site_name: event_shape}`` in the order the model samples them.

    Raises:
        PplGenError: if a latent site lies outside the ``"data"`` plate (a global latent
            variable has no per-datapoint guide), has a non-real support, or if there are
            no latent sites at all.
    """
    shapes = getattr(model, "latent_shapes", None)
    if shapes is not None:
        return dict(shapes)
    with torch.no_grad(), poutine.block():
        trace = poutine.trace(model).get_trace(x, indices=indices, size=size)
    shapes = {}
    for name, site in trace.nodes.items():
        if (
            site["type"] != "sample"
            or site["is_observed"]
            or site["infer"].get("is_auxiliary")
            or isinstance(site["fn"], _Subsample)  # the plate's own index site
        ):
            continue
        if not any(f.name == DATA_PLATE for f in site["cond_indep_stack"]):
            raise PplGenError(
                f"model: latent site {name!r} is outside pyro.plate({DATA_PLATE!r}); "
                "per-datapoint guides need every latent variable inside the data plate"
            )
        support = site["fn"].support
        base = getattr(support, "base_constraint", support)
        if base is not pyro.distributions.constraints.real:
            raise PplGenError(
                f"model: latent site {name!r} has support {support}; Gaussian guides need "
                "real-valued latents"
            )
        shapes[name] = tuple(site["fn"].event_shape)
    if not shapes:
        raise PplGenError("model: no latent sample sites found inside the data plate")
    return shapes
