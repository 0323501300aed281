"""The reference log-likelihood column of ``compare``: exact where tractable, AIS otherwise.

For a model with ``log_marginal`` (GMM, PPCA, FA, linear-Gaussian) each scheme's row already
holds the exact ``log p(x)`` of its fitted model.  For every other model -- the VAEs, any
hand-written model -- :func:`fill_reference` estimates it by annealed importance sampling
(Neal 2001; :func:`ppl_gen.infer.ais.evaluate_ais`) from the scheme's own guide to the
posterior of the scheme's own fitted model, as Wu et al. (2017) evaluate decoder-based
models.  Schemes that share a fitted model (``semi-amortised`` and ``nuts`` reuse another
scheme's) share its estimate.  With it the table gets the gaps of Cremer et al. (2018):
approximation gap ``log p(x) - ELBO[q*]`` and amortisation gap ``ELBO[q*] - ELBO[q_phi]``.
Forward AIS is a stochastic *lower* bound; its Monte Carlo standard error is reported.
"""

from __future__ import annotations

import contextlib

import torch
from pyro import poutine

from ppl_gen.core.errors import PplGenError
from ppl_gen.infer.bdmc import reference_log_likelihood
from ppl_gen.infer.schemes import SchemeResult


def _rows(result: SchemeResult, test: torch.Tensor) -> torch.Tensor:
    """The test rows the scheme's bounds cover (a prefix for NUTS)."""
    return test[: int(result.bounds.elbo.shape[0])]


def _joint(guide, x: torch.Tensor) -> bool:
    """Whether ``guide`` samples its sites jointly through an auxiliary site (full-rank,
    IAF, the NUTS Gaussian): AIS then has no per-site density to start from."""
    with torch.random.fork_rng(), torch.no_grad(), poutine.block():
        trace = poutine.trace(guide).get_trace(
            x[:1], torch.zeros(1, dtype=torch.long, device=x.device), x.shape[0]
        )
    return any((site.get("infer") or {}).get("is_auxiliary") for site in trace.nodes.values())


def fill_reference(
    results: dict[str, SchemeResult], test: torch.Tensor, steps: int, chains: int, seed: int
) -> dict[str, str]:
    """Give every result a per-datapoint ``test_log_likelihood``; return each one's method.

    Args:
        results: the fitted schemes (their ``test_log_likelihood`` is filled in place where
            it was ``None``).
        test: ``(N, D)`` test rows.
        steps, chains: AIS settings (``steps == 0``: no AIS; the column stays empty).
        seed: seeds the AIS chains.

    Returns:
        ``{scheme: "exact" | "ais" | None}``.
    """
    methods: dict[str, str | None] = {}
    done: dict[tuple[int, int], torch.Tensor | None] = {}  # (id(model), rows) -> AIS log p(x)
    for name, result in results.items():
        if result.test_log_likelihood is not None:
            methods[name] = "exact"
            continue
        if steps == 0:
            methods[name] = None
            continue
        x = _rows(result, test)
        key = (id(result.model), x.shape[0])
        if key not in done:
            guide = result.guide if callable(result.guide) else None
            if guide is not None and _joint(guide, x):
                guide = None  # AIS needs per-site proposal densities: start from the prior
            try:
                with result.param_store or contextlib.nullcontext():
                    done[key], _ = reference_log_likelihood(
                        result.model, guide, x, steps=steps, chains=chains, seed=seed
                    )
            except PplGenError as exc:  # a model AIS cannot anneal (e.g. discrete latents)
                done[key] = None
                result.notes.append(f"{name}: no AIS reference ({str(exc).splitlines()[0]}).")
        if done[key] is None:
            methods[name] = None
            continue
        result.test_log_likelihood = done[key]
        methods[name] = "ais"
        result.notes.append(
            f"{name}: log p(x) by AIS ({steps} annealing steps, {chains} chains, HMC "
            "transitions, from the scheme's guide; a stochastic lower bound)."
        )
    return methods
