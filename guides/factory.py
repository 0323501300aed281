"""Build a guide of a named family for any model: :func:`make_guide`.

* ``diag``: ``AmortisedGaussianGuide`` (amortised) / ``MeanFieldGuide`` (per-datapoint);
* ``full``: ``AmortisedFullRankGuide`` / ``LocalFullRankGuide``;
* ``iaf``: ``AmortisedIAFGuide`` / refused (no per-datapoint flow is offered).

``rank=r`` turns ``full`` into a low-rank plus diagonal Gaussian.  The structured guide
(:class:`~ppl_gen.guides.StructuredAmortisedGuide`) is a dependency order, not a family, and
is built directly.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ppl_gen.core.errors import PplGenError
from ppl_gen.guides.encoder import AmortisedGaussianGuide
from ppl_gen.guides.flow import AmortisedIAFGuide
from ppl_gen.guides.full_rank import AmortisedFullRankGuide, LocalFullRankGuide
from ppl_gen.guides.mean_field import MeanFieldGuide

#: Guide families :func:`make_guide` builds (``compare --guide-family``).
GUIDE_FAMILIES = ("diag", "full", "iaf")

_AMORTISED = {
    "diag": AmortisedGaussianGuide,
    "full": AmortisedFullRankGuide,
    "iaf": AmortisedIAFGuide,
}
_LOCAL = {"diag": MeanFieldGuide, "full": LocalFullRankGuide}


def make_guide(
    family: str, model: Callable, *, amortised: bool, num_data: int | None = None, **kw
) -> nn.Module:
    """A guide of ``family`` for ``model``.

    Args:
        family: one of :data:`GUIDE_FAMILIES`.
        model: the Pyro model.
        amortised: an encoder guide (``True``) or per-datapoint parameters (``False``).
        num_data: ``N``, rows of the per-datapoint tables (required when not amortised).
        **kw: passed to the guide's constructor (e.g. ``hidden``, ``rank``, ``num_flows``).

    Returns:
        The guide (an ``nn.Module`` with ``setup(x, indices, size)``).

    Raises:
        PplGenError: ``guide_family: ...`` for an unknown family or ``iaf`` without
            amortisation; ``num_data: ...`` when it is missing for a per-datapoint guide.
    """
    if family not in GUIDE_FAMILIES:
        raise PplGenError(
            f"guide_family: must be one of {', '.join(GUIDE_FAMILIES)}, got {family!r}"
        )
    if amortised:
        return _AMORTISED[family](model, **kw)
    if family not in _LOCAL:
        raise PplGenError(
            f"guide_family: {family!r} has no per-datapoint (non-amortised) guide; use it with "
            f"an amortised scheme, or one of {', '.join(_LOCAL)}"
        )
    if num_data is None:
        raise PplGenError("num_data: required for a per-datapoint (non-amortised) guide")
    return _LOCAL[family](model, num_data, **kw)
