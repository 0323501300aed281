"""Bidirectional Monte Carlo (BDMC, Grosse, Ghahramani & Adams 2015) and the reference
log-likelihood of any model.

BDMC checks AIS where the truth is unknown.  Datapoints are *simulated* from the fitted
model, ``(x_i, z_i) ~ p(x, z)``, so ``z_i`` is an exact draw from the posterior
``p(z | x_i)``.  Forward AIS (:mod:`ppl_gen.infer.ais`) from ``q0`` to the posterior gives a
stochastic lower bound of ``log p(x_i)``; reverse AIS, started at ``z_i`` and run through
the same distributions backwards (``t = T..1``: move with the HMC kernel of ``pi_t``, then
add ``(beta_{t-1} - beta_t) f(z)`` to the log-weight), estimates ``1 / p(x_i)`` without bias,
so ``-log mean exp`` of its weights is a stochastic upper bound (Grosse et al. 2015, sec. 4).
The gap ``upper - lower`` bounds the error of forward AIS with the same settings on
data like the simulated data.  Both directions use the same step sizes: the forward run
adapts them (per datapoint, towards ``target_accept``) and records them; the reverse run
uses the recorded ones, reversed, without adapting.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine

from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.infer.ais import (
    AISEstimate,
    AnnealingTarget,
    annealing_schedule,
    chain_log_mean_exp,
    check_ais_args,
    chunk_rows,
    evaluate_ais,
    progress_bar,
    run_chains,
    seeded,
)
from ppl_gen.infer.bounds import _max_plate_nesting


@dataclass(frozen=True)
class BDMCResult:
    """Forward (lower) and reverse (upper) AIS on data simulated from the model.

    Attributes:
        forward: :class:`~ppl_gen.infer.ais.AISEstimate` of forward AIS, ``log_px: (n,)``.
        reverse: the reverse run; its ``log_px: (n,)`` is ``-log mean exp`` of the reverse
            weights (a stochastic upper bound), ``log_px_se`` its delta-method error.
        x: ``(n, ...)`` the simulated datapoints.
    """

    forward: AISEstimate
    reverse: AISEstimate
    x: torch.Tensor

    @property
    def lower(self) -> float:
        """Mean forward-AIS estimate, nats per datapoint (stochastic lower bound)."""
        return self.forward.mean

    @property
    def upper(self) -> float:
        """Mean reverse-AIS estimate, nats per datapoint (stochastic upper bound)."""
        return self.reverse.mean

    @property
    def gap(self) -> float:
        """``upper - lower``, nats per datapoint."""
        return self.upper - self.lower

    def summary(self) -> dict[str, float | int]:
        """``lower``, ``upper``, ``gap`` (nats/datapoint), their Monte Carlo errors, settings."""
        return {
            "lower": self.lower,
            "upper": self.upper,
            "gap": self.gap,
            "lower_mc_se": self.forward.mc_se,
            "upper_mc_se": self.reverse.mc_se,
            "n": int(self.x.shape[0]),
            "steps": self.forward.steps,
            "chains": self.forward.chains,
            "leapfrog": self.forward.leapfrog,
            "seconds": self.forward.seconds + self.reverse.seconds,
        }


def simulate(model: Callable, like: torch.Tensor, n: int) -> tuple[torch.Tensor, dict]:
    """Draw ``n`` datapoints and their latents from ``p(x, z)`` (ancestral sampling).

    Args:
        model: Pyro model of the data plate convention with one observed site.
        like: ``(m, ...)`` rows whose shape, dtype and device the simulated rows take.
        n: number of rows.

    Returns:
        ``(x: (n, ...), {latent site: value})``.

    Raises:
        PplGenError: if the model has no or several observed sites.
    """
    template = like[:1].expand((n,) + tuple(like.shape[1:])).clone()
    with torch.no_grad(), poutine.block():
        observed = [
            name
            for name, site in poutine.trace(model).get_trace(template).nodes.items()
            if site["type"] == "sample" and site["is_observed"]
        ]
        if len(observed) != 1:
            raise PplGenError(
                f"model: BDMC simulates data from one observed site, found {observed or 'none'}"
            )
        tr = poutine.trace(poutine.uncondition(model)).get_trace(template)
    x = tr.nodes[observed[0]]["value"].detach().reshape(template.shape).to(like.dtype)
    z = {
        name: site["value"].detach()
        for name, site in tr.nodes.items()
        if site["type"] == "sample" and name not in observed
    }
    return x, z


def bdmc(
    model: Callable,
    like: torch.Tensor,
    *,
    n: int = 100,
    guide: Callable | None = None,
    steps: int = 1000,
    chains: int = 16,
    leapfrog: int = 10,
    step_size: float = 0.1,
    target_accept: float | None = 0.65,
    schedule: str = "sigmoid",
    seed: int | None = None,
    batch_size: int | None = None,
    max_samples_per_chunk: int = 4096,
    progress: bool | None = None,
) -> BDMCResult:
    """BDMC (Grosse et al. 2015): forward and reverse AIS on ``n`` datapoints simulated from
    ``model``, sandwiching their ``log p(x)``.

    Args:
        model: Pyro model (data plate convention, continuous latents, one observed site).
        like: ``(m, ...)`` rows giving the shape, dtype and device of a datapoint (values
            unused), e.g. a few test rows.
        n: datapoints simulated.
        guide: initial distribution ``q0`` of both directions (``None``: the prior).
        steps, chains, leapfrog, step_size, target_accept, schedule, batch_size,
            max_samples_per_chunk, progress: as in :func:`~ppl_gen.infer.ais.evaluate_ais`.
        seed: seeds a forked copy of the global RNGs (simulation and chains).

    Returns:
        :class:`BDMCResult` (``lower <= upper`` up to Monte Carlo error).

    Raises:
        PplGenError: a bad argument (named), or a model AIS cannot handle.
    """
    check_ais_args(steps, chains, leapfrog, step_size, target_accept, schedule)
    require_positive_int("n", n)
    if not torch.is_tensor(like) or like.dim() == 0 or like.shape[0] == 0:
        raise PplGenError("like: expected a non-empty tensor of datapoints (m, ...)")
    rows = chunk_rows(n, chains, batch_size, max_samples_per_chunk)
    betas = annealing_schedule(steps, schedule)
    keys = ("x", "lw_f", "lw_r", "acc_f", "acc_r", "eps", "sec_f", "sec_r")
    out: dict[str, list] = {k: [] for k in keys}
    no_autocast = torch.autocast(device_type=like.device.type, enabled=False)
    with (
        torch.no_grad(),
        pyro.validation_enabled(False),
        no_autocast,
        seeded(seed, like.device),
        progress_bar(2 * steps * math.ceil(n / rows), progress, "BDMC") as bar,
    ):
        for start in range(0, n, rows):
            xb, z_star = simulate(model, like, min(rows, n - start))
            mpn = _max_plate_nesting(model, guide if guide is not None else model, (xb,), {})
            target = AnnealingTarget(model, guide, xb, None, None, chains, mpn)
            t0 = time.perf_counter()
            u0 = target.initial()
            lw_f, _, acc_f, _, eps = run_chains(
                target,
                u0,
                betas,
                leapfrog=leapfrog,
                step_size=step_size,
                target_accept=target_accept,
                record_step_sizes=True,
                bar=bar,
            )
            t1 = time.perf_counter()
            lw_r, _, acc_r, _, _ = run_chains(
                target,
                target.unconstrain(z_star, u0),
                betas,
                leapfrog=leapfrog,
                step_size=eps,
                target_accept=None,
                reverse=True,
                bar=bar,
            )
            for key, value in zip(
                keys,
                (xb, lw_f, lw_r, acc_f, acc_r, eps[-1], t1 - t0, time.perf_counter() - t1),
                strict=True,
            ):
                out[key].append(value.cpu() if torch.is_tensor(value) else value)
    dtype = like.dtype

    def estimate(lw: torch.Tensor, acc: list, seconds: list, direction: str) -> AISEstimate:
        est, se, ess = chain_log_mean_exp(lw)
        return AISEstimate(
            log_px=(est if direction == "forward" else -est).to(dtype),
            log_px_se=se.to(dtype),
            ess=ess.to(dtype),
            acceptance=torch.cat(acc).to(dtype),
            step_size=torch.cat(out["eps"]).to(dtype),
            steps=steps,
            chains=chains,
            leapfrog=leapfrog,
            schedule=schedule,
            seconds=float(sum(seconds)),
            direction=direction,
        )

    return BDMCResult(
        forward=estimate(torch.cat(out["lw_f"], 1), out["acc_f"], out["sec_f"], "forward"),
        reverse=estimate(torch.cat(out["lw_r"], 1), out["acc_r"], out["sec_r"], "reverse"),
        x=torch.cat(out["x"]),
    )


def reference_log_likelihood(
    model: Callable,
    guide: Callable | None,
    x: torch.Tensor,
    *,
    steps: int = 1000,
    chains: int = 16,
    seed: int | None = 0,
    **ais_kwargs,
) -> tuple[torch.Tensor, str]:
    """The best available ``log p(x_i)`` per row: exact where the model has one, else AIS.

    Exact: the model's ``log_marginal(x)`` (the :class:`~ppl_gen.lvm.tractable.
    ExactPosterior` interface: GMM, PPCA, FA, linear-Gaussian models).  Otherwise forward
    AIS from ``guide`` (or the prior when ``guide`` is ``None``; a per-datapoint guide must
    already be fitted to ``x``) with ``steps``, ``chains``, ``seed`` and ``ais_kwargs``
    passed to :func:`~ppl_gen.infer.ais.evaluate_ais`.

    Args:
        x: ``(N, ...)`` rows on the model's device.

    Returns:
        ``(log_px: (N,) nats on CPU, method)`` with ``method`` ``"exact"`` or ``"ais"``.

    Raises:
        PplGenError: bad AIS arguments (named) or a model AIS cannot handle.
    """
    log_marginal = getattr(model, "log_marginal", None)
    if callable(log_marginal):
        with torch.no_grad():
            return log_marginal(x).detach().cpu(), "exact"
    est = evaluate_ais(model, x, guide, steps=steps, chains=chains, seed=seed, **ais_kwargs)
    return est.log_px, "ais"


def ais_metrics(
    model: Callable,
    guide: Callable | None,
    x: torch.Tensor,
    steps: int,
    chains: int,
    seed: int | None,
    *,
    prefix: str = "test_log_likelihood_ais",
) -> dict[str, float | int]:
    """Forward AIS of ``x: (N, ...)`` as the flat record ``ppl-gen evaluate`` writes:
    ``{prefix}`` (mean, nats per datapoint), ``{prefix}_se`` (over datapoints),
    ``{prefix}_mc_se`` (Monte Carlo, over chains), ``ais_steps``, ``ais_chains``,
    ``ais_leapfrog``, ``ais_seconds``, ``ais_acceptance``."""
    est = evaluate_ais(model, x, guide, steps=steps, chains=chains, seed=seed)
    return {
        prefix: est.mean,
        f"{prefix}_se": est.se,
        f"{prefix}_mc_se": est.mc_se,
        "ais_steps": steps,
        "ais_chains": chains,
        "ais_leapfrog": est.leapfrog,
        "ais_seconds": est.seconds,
        "ais_acceptance": float(est.acceptance.mean()),
    }


__all__ = ["BDMCResult", "ais_metrics", "bdmc", "reference_log_likelihood", "simulate"]
