"""Per-datapoint evidence lower bounds: ELBO and IWAE-K, in nats.

For a model ``p(x, z)`` and guide ``q(z | x)`` the importance weights of datapoint ``x_i``
are ``w_ik = p(x_i, z_ik) / q(z_ik | x_i)`` with ``z_ik ~ q``, ``k = 1..K``.  Then

* ELBO_i  = mean_k log w_ik  (Monte Carlo estimate of E_q[log p(x_i, z) - log q(z | x_i)]),
* IWAE-K_i = log (1/K) sum_k w_ik  (Burda et al. 2016, eq. 8),

and ``ELBO_i <= E[IWAE-K_i] <= log p(x_i)``, with IWAE-K non-decreasing in K.

Why our own evaluator: Pyro's ``RenyiELBO`` and ``vectorized_importance_weights`` take
log-mean-exp of *scaled* log-weights (``poutine.scale`` / subsampling multiply them by
``N / batch``) and sum over the data plate, which is the bound of the whole dataset, not of
each datapoint.  Here every site's log-density is taken from ``site["fn"].log_prob`` (no
scaling, masks respected) and summed over every dimension except the particle dimension
and the ``"data"`` plate's, giving unscaled per-datapoint log-weights.  The K samples are
drawn at once in a vectorised particle plate (no Python loop per sample), and the work is
chunked over K and over the data so that memory stays bounded.  A latent site that the
guide does not sample is drawn by the model from its prior, which then serves as the
proposal: its density cancels and it is left out of the weight.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.ops.packed import scale_and_mask
from pyro.poutine.subsample_messenger import _Subsample
from tqdm.auto import tqdm

from ppl_gen.core.distributed import DistributedContext
from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.infer.enumeration import enumerated_sites
from ppl_gen.lvm.plates import DATA_PLATE

PARTICLE_PLATE = "_ppl_gen_particles"


@dataclass(frozen=True)
class BoundEstimate:
    """Per-datapoint bounds and their summaries.

    Attributes:
        elbo: ``(N,)`` ELBO estimate of each datapoint (nats), averaged over the K samples.
        iwae: ``(N,)`` IWAE-K of each datapoint (nats).
        k: number of importance samples K per datapoint.
        log_weights: ``(N, K)`` log importance weights, kept only when requested.
    """

    elbo: torch.Tensor
    iwae: torch.Tensor
    k: int
    log_weights: torch.Tensor | None = None

    @staticmethod
    def _se(values: torch.Tensor) -> float:
        n = values.numel()
        return float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")

    @property
    def elbo_mean(self) -> float:
        """Mean ELBO, nats per datapoint."""
        return float(self.elbo.mean())

    @property
    def iwae_mean(self) -> float:
        """Mean IWAE-K, nats per datapoint."""
        return float(self.iwae.mean())

    @property
    def elbo_se(self) -> float:
        """Standard error of :attr:`elbo_mean` over datapoints (nats)."""
        return self._se(self.elbo)

    @property
    def iwae_se(self) -> float:
        """Standard error of :attr:`iwae_mean` over datapoints (nats)."""
        return self._se(self.iwae)

    def summary(self) -> dict[str, float]:
        """``{"elbo", "elbo_se", "iwae", "iwae_se", "k"}`` as plain numbers (nats/datapoint)."""
        return {
            "elbo": self.elbo_mean,
            "elbo_se": self.elbo_se,
            "iwae": self.iwae_mean,
            "iwae_se": self.iwae_se,
            "k": self.k,
        }


def _max_plate_nesting(model: Callable, guide: Callable, args, kwargs) -> int:
    with torch.no_grad(), poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    dims = [
        -frame.dim
        for trace in (guide_trace, model_trace)
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return max(dims, default=0)


def _data_dim(name: str, site: dict) -> int:
    """The batch dim of the ``"data"`` plate at ``site`` (error if it is outside)."""
    data_dims = [f.dim for f in site["cond_indep_stack"] if f.name == DATA_PLATE]
    if not data_dims:
        raise PplGenError(
            f"model: site {name!r} is outside pyro.plate({DATA_PLATE!r}); per-datapoint bounds "
            "need every latent and observed variable inside the data plate"
        )
    return data_dims[0]


def max_plate_nesting(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    indices: torch.Tensor | None = None,
    size: int | None = None,
) -> int:
    """How many plate dims the model and guide use on ``x`` (found by one trace of each)."""
    return _max_plate_nesting(model, guide, (x,), {"indices": indices, "size": size})


def _site_log_prob(name: str, site: dict, particle_dim: int) -> torch.Tensor:
    """Unscaled log-density of one site reduced to ``(K, batch)``."""
    log_prob = scale_and_mask(site["fn"].log_prob(site["value"]), mask=site["mask"])
    if not torch.is_tensor(log_prob):
        log_prob = torch.as_tensor(log_prob, dtype=site["value"].dtype)
    data_dim = _data_dim(name, site)
    width = -particle_dim
    log_prob = log_prob.reshape((1,) * max(width - log_prob.dim(), 0) + log_prob.shape)
    keep = {log_prob.dim() + particle_dim, log_prob.dim() + data_dim}
    other = [d for d in range(log_prob.dim()) if d not in keep]
    if other:
        log_prob = log_prob.sum(other, keepdim=True)
    return log_prob.reshape(log_prob.shape[log_prob.dim() + particle_dim], -1)


def _enumerated_log_prob(name: str, site: dict, particle_dim: int) -> torch.Tensor:
    """Unscaled log-density of a model site under parallel enumeration, reduced to
    ``(*enum_shape, K, batch)`` (the enumeration dims sit left of the particle dim)."""
    log_prob = scale_and_mask(site["fn"].log_prob(site["value"]), mask=site["mask"])
    if not torch.is_tensor(log_prob):
        log_prob = torch.as_tensor(log_prob, dtype=site["value"].dtype)
    data_dim = _data_dim(name, site)
    log_prob = log_prob.reshape((1,) * max(-particle_dim - log_prob.dim(), 0) + log_prob.shape)
    n = log_prob.dim()
    first = n + particle_dim  # dims before it are enumeration dims
    other = [d for d in range(first, n) if d not in (first, n + data_dim)]
    if other:
        log_prob = log_prob.sum(other, keepdim=True)
    return log_prob.reshape(*log_prob.shape[: first + 1], -1)


def _enumerated_model_trace(model, guide_trace, x, kwargs, names, particle_dim):
    """Trace of ``model`` replayed against the guide, with the sites ``names`` enumerated
    in parallel in dims left of the particle plate."""
    marked = poutine.infer_config(
        poutine.replay(model, trace=guide_trace),
        lambda msg: {"enumerate": "parallel"} if msg["name"] in names else {},
    )
    enumerated = poutine.enum(marked, first_available_dim=particle_dim - 1)
    return poutine.trace(enumerated).get_trace(x, **kwargs)


def log_importance_weights(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    k: int,
    indices: torch.Tensor | None = None,
    size: int | None = None,
    max_plate_nesting: int | None = None,
    enumerate_sites: tuple[str, ...] = (),
) -> torch.Tensor:
    """Unscaled log importance weights ``log p(x_i, z_ik) - log q(z_ik | x_i)``.

    Discrete latent sites named in ``enumerate_sites`` (those the guide does not sample,
    see :func:`ppl_gen.infer.enumeration.enumerated_sites`) are summed out exactly:
    the weight is then ``log sum_c p(x_i, z_ik, c) - log q(z_ik | x_i)``, the quantity
    ``TraceEnum_ELBO`` trains.

    Args:
        model, guide: Pyro callables following the data plate convention
            (:mod:`ppl_gen.lvm.plates`).
        x: ``(batch, ...)`` datapoints.
        k: number of samples per datapoint, drawn in one vectorised plate.
        indices, size: passed to model and guide (needed by per-datapoint guides).
        max_plate_nesting: number of plate dims model and guide use (found by a trace
            when ``None``).
        enumerate_sites: discrete model sites to sum out (parallel enumeration).

    Returns:
        ``(k, batch)`` log-weights in nats.

    Raises:
        PplGenError: if ``k`` is not a positive integer or a sample site lies outside the
            data plate.
    """
    require_positive_int("iwae_k", k)
    kwargs = {"indices": indices, "size": size}
    if max_plate_nesting is None:
        max_plate_nesting = _max_plate_nesting(model, guide, (x,), kwargs)
    particle_dim = -(max_plate_nesting + 1)
    with pyro.plate(PARTICLE_PLATE, k, dim=particle_dim):
        guide_trace = poutine.trace(guide).get_trace(x, **kwargs)
        if enumerate_sites:
            model_trace = _enumerated_model_trace(
                model, guide_trace, x, kwargs, set(enumerate_sites), particle_dim
            )
        else:
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                x, **kwargs
            )
    total = x.new_zeros(k, x.shape[0])
    if enumerate_sites:
        joint = total
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample" or isinstance(site["fn"], _Subsample):
                continue
            if not site["is_observed"] and name not in guide_trace and name not in enumerate_sites:
                continue
            joint = joint + _enumerated_log_prob(name, site, particle_dim)
        lead = tuple(range(joint.dim() - 2))
        total = torch.logsumexp(joint, dim=lead) if lead else joint
        traces = ((guide_trace, -1.0),)
    else:
        traces = ((model_trace, 1.0), (guide_trace, -1.0))
    for trace, sign in traces:
        for name, site in trace.nodes.items():
            if (
                site["type"] != "sample"
                # A guide's auxiliary site carries (part of) log q, as in Pyro's ELBOs
                # (AutoContinuous, ppl_gen.guides' full-rank / IAF guides): it counts.
                or (trace is model_trace and site["infer"].get("is_auxiliary"))
                or isinstance(site["fn"], _Subsample)
            ):
                continue
            if trace is model_trace and not site["is_observed"] and name not in guide_trace:
                # Latent the guide does not propose: the model draws it from its prior,
                # which is then the proposal, and its prior density cancels in the weight.
                continue
            total = total + sign * _site_log_prob(name, site, particle_dim)
    return total


def evaluate_bounds(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    k: int = 1000,
    *,
    batch_size: int | None = None,
    max_samples_per_chunk: int = 50_000,
    indices: torch.Tensor | None = None,
    size: int | None = None,
    keep_log_weights: bool = False,
    validate: bool = False,
    dist: DistributedContext | None = None,
    progress: bool = False,
) -> BoundEstimate:
    """Per-datapoint ELBO and IWAE-K of ``x`` under ``model`` and ``guide``.

    The data are split into chunks of ``batch_size`` rows and the K samples into chunks so
    that at most ``max_samples_per_chunk`` (rows x samples) are alive at once; IWAE-K is
    accumulated with a running log-sum-exp, so memory does not grow with K.

    Args:
        model, guide: Pyro callables following the data plate convention.
        x: ``(N, ...)`` datapoints, on the device the model lives on.
        k: K, importance samples per datapoint (>= 1).
        batch_size: rows per data chunk (default: chosen from ``max_samples_per_chunk``).
        max_samples_per_chunk: bound on rows x samples in one vectorised pass.
        indices: ``(N,)`` positions of the rows for per-datapoint guides (default
            ``0..N-1``); ``size``: the guide's dataset size (default ``N``).
        keep_log_weights: also return the ``(N, K)`` log-weights (for PSIS diagnostics).
        validate: keep Pyro's distribution argument validation on (slower).
        dist: a data-parallel context (:mod:`ppl_gen.core.distributed`): every rank passes the
            same ``x``, scores rows ``rank, rank + W, ...`` and the per-datapoint results
            are gathered back in the order of ``x`` on every rank.  ``None``: this process
            scores all of ``x``.
        progress: a progress bar over the data chunks on stderr, on a terminal only.

    Always computed in float32/float64, outside any ``torch.autocast`` region (bounds
    are sums of many log-densities; bfloat16 would cost whole nats).

    Returns:
        :class:`BoundEstimate` with ``elbo`` and ``iwae`` of shape ``(N,)``, nats per datapoint
        (on CPU).

    Raises:
        PplGenError: if ``k`` is not a positive integer or ``x`` is empty.
    """
    require_positive_int("iwae_k", k)
    n = x.shape[0]
    if n == 0:
        raise PplGenError("x: no datapoints to evaluate")
    if indices is None:
        indices = torch.arange(n, device=x.device)
    size = n if size is None else size
    if dist is not None and dist.distributed:
        return _evaluate_sharded(
            model,
            guide,
            x,
            k,
            dist,
            batch_size=batch_size,
            max_samples_per_chunk=max_samples_per_chunk,
            indices=indices,
            size=size,
            keep_log_weights=keep_log_weights,
            validate=validate,
        )
    if batch_size is None:
        batch_size = max(1, min(n, max_samples_per_chunk // min(k, max_samples_per_chunk)))
    k_chunk = max(1, min(k, max_samples_per_chunk // batch_size))
    elbos, iwaes, weights = [], [], []
    no_autocast = torch.autocast(device_type=x.device.type, enabled=False)
    with torch.no_grad(), pyro.validation_enabled(validate), no_autocast:
        mpn = _max_plate_nesting(model, guide, (x[:1],), {"indices": indices[:1], "size": size})
        summed = enumerated_sites(model, guide, x[:1], indices[:1], size)
        starts = range(0, n, batch_size)
        # progress: a bar on stderr on a terminal only (tqdm's disable=None), never in logs.
        bar = tqdm(starts, desc=f"IWAE-{k}", unit="chunk", disable=None if progress else True)
        for start in bar:
            xb, ib = x[start : start + batch_size], indices[start : start + batch_size]
            lse = torch.full((xb.shape[0],), -math.inf, device=x.device, dtype=x.dtype)
            total = torch.zeros(xb.shape[0], device=x.device, dtype=torch.float64)
            chunks = []
            for k_start in range(0, k, k_chunk):
                kk = min(k_chunk, k - k_start)
                lw = log_importance_weights(model, guide, xb, kk, ib, size, mpn, summed)
                lse = torch.logaddexp(lse, torch.logsumexp(lw, dim=0))
                total += lw.sum(0, dtype=torch.float64)
                if keep_log_weights:
                    chunks.append(lw.T.cpu())
            iwaes.append((lse - math.log(k)).cpu())
            elbos.append((total / k).to(x.dtype).cpu())
            if keep_log_weights:
                weights.append(torch.cat(chunks, dim=1))
    return BoundEstimate(
        elbo=torch.cat(elbos),
        iwae=torch.cat(iwaes),
        k=k,
        log_weights=torch.cat(weights) if keep_log_weights else None,
    )


def _evaluate_sharded(
    model: Callable, guide: Callable, x: torch.Tensor, k: int, dist: DistributedContext, **kw
) -> BoundEstimate:
    """:func:`evaluate_bounds` of this rank's rows of ``x``, gathered in order on every rank."""
    indices = kw.pop("indices")
    x_r, i_r = dist.shard(x), dist.shard(indices)
    if x_r.shape[0]:
        part = evaluate_bounds(model, guide, x_r, k, indices=i_r, **kw)
        elbo, iwae, lw = part.elbo, part.iwae, part.log_weights
    else:  # more ranks than rows
        elbo = iwae = torch.zeros(0, dtype=x.dtype)
        lw = torch.zeros(0, k, dtype=x.dtype)
    return BoundEstimate(
        elbo=dist.gather_shards(elbo),
        iwae=dist.gather_shards(iwae),
        k=k,
        log_weights=dist.gather_shards(lw) if kw.get("keep_log_weights") else None,
    )


def iwae_by_k(log_weights: torch.Tensor, ks: list[int] | None = None) -> dict[int, float]:
    """Mean IWAE-K of a test set for several K from one set of log-weights.

    The ``K_max`` weights of each datapoint are split into ``K_max // k`` disjoint groups of
    ``k``; IWAE-k is averaged over the groups (an unbiased, lower-variance estimate of
    E[IWAE-k]; Burda et al. 2016, eq. 8), then over datapoints.

    Args:
        log_weights: ``(N, K_max)`` log importance weights (nats).
        ks: the K values (default ``1, 2, 5, 10, 20, 50, ...`` up to ``K_max``).

    Returns:
        ``{k: mean IWAE-k (nats per datapoint)}`` for every ``k <= K_max``.
    """
    k_max = log_weights.shape[1]
    if ks is None:
        ks = sorted({m * 10**e for e in range(7) for m in (1, 2, 5) if m * 10**e <= k_max})
        ks = sorted(set(ks) | {k_max})
    out = {}
    lw = log_weights.double()
    for k in ks:
        if not 1 <= k <= k_max:
            continue
        groups = k_max // k
        chunk = lw[:, : groups * k].reshape(lw.shape[0], groups, k)
        out[int(k)] = float((torch.logsumexp(chunk, dim=-1) - math.log(k)).mean())
    return out
