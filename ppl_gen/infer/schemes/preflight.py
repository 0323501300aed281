"""Check that a model and every requested scheme apply, before anything trains.

``compare`` runs :func:`check_schemes` on a fresh model instance and a few training rows
(already binarised when training binarises): the model is traced, its latent sites are
described (:func:`ppl_gen.guides.sites.latent_sites`: every latent inside the data plate,
a support the guides can handle), its discrete sites are checked for exact enumeration
(:func:`ppl_gen.infer.enumeration.enumerated_sites`), and a two-sample bound is computed
with the encoder guide the ``amortised`` scheme would build.  Whatever goes wrong there --
a decoder whose output width does not match the data, a site outside the data plate, an
unsupported distribution, options given to the wrong part -- becomes one
:class:`~ppl_gen.core.errors.PplGenError` naming the site or argument, instead of a raw
``RuntimeError`` after other schemes have trained.  The dry run happens in a throwaway Pyro
parameter store and leaves every random stream as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro
import torch

from ppl_gen.core.errors import PplGenError
from ppl_gen.guides.sites import latent_sites
from ppl_gen.infer.bounds import evaluate_bounds
from ppl_gen.infer.enumeration import enumerated_sites
from ppl_gen.infer.param_stores import FitStore
from ppl_gen.infer.schemes.em import check_em
from ppl_gen.infer.schemes.nuts import check_nuts

#: Exceptions a misdeclared model raises from inside Pyro or torch.
_MODEL_ERRORS = (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError)


def _summary(exc: BaseException) -> str:
    """The informative head of an error: Pyro prefixes the site ("Error while computing
    log_prob at site 'x':") on its own line, the cause follows."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    head = " ".join(lines[:2]) if lines else type(exc).__name__
    return head if len(head) <= 240 else head[:237] + "..."


def _failing_site(model: Callable, x: torch.Tensor) -> str | None:
    """The first sample site of ``model`` whose log-density cannot be computed on ``x``
    (``None`` if the model fails before any site, or nowhere)."""
    try:
        trace = pyro.poutine.trace(model).get_trace(x)
    except _MODEL_ERRORS:
        return None
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        try:
            site["fn"].log_prob(site["value"])
        except _MODEL_ERRORS:
            return name
    return None


def dry_run(model: Callable, x: torch.Tensor, make_guide: Callable[[Callable], Callable]) -> None:
    """Trace ``model`` on ``x: (batch, D)`` and bound it with ``make_guide(model)`` (K = 2).

    Raises:
        PplGenError: naming the model's failing site or argument.
    """
    devices = [x.device] if x.device.type == "cuda" else []
    with FitStore(), torch.random.fork_rng(devices=devices), pyro.validation_enabled(False):
        try:
            if not hasattr(model, "latent_shapes") and not getattr(model, "discrete", False):
                latent_sites(model, x)
            enumerated_sites(model, None, x)
            guide = make_guide(model)
            setup = getattr(guide, "setup", None)
            if setup is not None:
                setup(x, torch.arange(x.shape[0], device=x.device), x.shape[0])
            if isinstance(guide, torch.nn.Module):
                guide.to(x.device)
            bounds = evaluate_bounds(model, guide, x, k=2)
        except PplGenError:
            raise
        except _MODEL_ERRORS as exc:
            site = _failing_site(model, x)
            where = f" at site {site!r}" if site else ""
            raise PplGenError(
                f"model: running it on {x.shape[0]} rows of the data failed{where} "
                f"({_summary(exc)})"
            ) from None
    if not torch.isfinite(bounds.elbo).any():
        raise PplGenError(
            "model: its log-density on rows of the data is not finite (are the data inside "
            "the likelihood's support, e.g. counts for a Poisson, 0/1 for a Bernoulli?)"
        )


def check_schemes(
    model: Callable,
    schemes: Sequence[str],
    name: str,
    x: torch.Tensor,
    make_guide: Callable[[Callable], Callable],
) -> None:
    """Refuse a model, or a scheme that cannot apply to it, before anything is trained.

    Args:
        model: a fresh instance of the model to compare.
        schemes: the requested schemes.
        name: the model's name for messages.
        x: ``(batch, D)`` a few training rows, as training will see them.
        make_guide: builds the amortised scheme's guide for the dry run.

    Raises:
        PplGenError: naming the scheme or the model's site / argument.
    """
    dry_run(model, x, make_guide)
    if "em" in schemes:
        check_em(model, name)
    if "nuts" in schemes:
        devices = [x.device] if x.device.type == "cuda" else []
        with FitStore(), torch.random.fork_rng(devices=devices), pyro.validation_enabled(False):
            check_nuts(model, name, None if hasattr(model, "latent_shapes") else x)
    if "mean-field" in schemes and getattr(model, "discrete", False):
        if getattr(model, "covariance", "full") != "full":
            raise PplGenError(
                "schemes mean-field: the variational Bayesian GMM needs covariance full"
            )
