"""Inference schemes compared by ``ppl-gen compare``, all on the same model definitions.

============== ===========================================================================
scheme         what it fits
============== ===========================================================================
em             exact E-step, closed-form M-step (or Monte Carlo EM), :mod:`.em`
mean-field     CAVI with a factorised q (or SVI with per-datapoint q), :mod:`.mean_field`
svi-local      SVI, per-datapoint Gaussian q (discrete latents enumerated), :mod:`.svi`
amortised      SVI with an encoder q(z|x; phi), :mod:`.svi`
semi-amortised encoder output refined per datapoint (Kim et al. 2018), :mod:`.semi_amortised`
nuts           NUTS reference posterior on a few test points, :mod:`.nuts`
============== ===========================================================================
"""

from ppl_gen.infer.schemes.base import SchemeResult, SchemeSettings
from ppl_gen.infer.schemes.em import check_em, fit_em
from ppl_gen.infer.schemes.mean_field import fit_mean_field
from ppl_gen.infer.schemes.nuts import check_nuts, fit_nuts
from ppl_gen.infer.schemes.semi_amortised import fit_semi_amortised
from ppl_gen.infer.schemes.svi import fit_amortised, fit_svi_local

SCHEMES = ("em", "mean-field", "svi-local", "amortised", "semi-amortised", "nuts")
#: Other spellings of scheme names, accepted everywhere: Pyro and Cremer et al. (2018)
#: write "amortized".
SCHEME_ALIASES = {"amortized": "amortised", "semi-amortized": "semi-amortised"}


def normalise_scheme(name: str) -> str:
    """``name`` with an alias (:data:`SCHEME_ALIASES`) replaced by its canonical spelling."""
    return SCHEME_ALIASES.get(name, name)


__all__ = [
    "SCHEMES",
    "SCHEME_ALIASES",
    "SchemeResult",
    "SchemeSettings",
    "check_em",
    "check_nuts",
    "fit_amortised",
    "fit_em",
    "fit_mean_field",
    "fit_nuts",
    "fit_semi_amortised",
    "fit_svi_local",
    "normalise_scheme",
]
