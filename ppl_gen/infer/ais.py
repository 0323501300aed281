"""Annealed importance sampling (AIS, Neal 2001) of per-datapoint ``log p(x)``, in nats.

For each datapoint ``x_i`` AIS anneals from a normalised initial distribution ``q0(z)``
(the guide ``q(z | x_i)``, or the prior ``p(z)`` when there is no guide) to the posterior
``p(z | x_i) ∝ p(x_i, z)`` through the geometric intermediate distributions

    pi_t(z) ∝ q0(z)^(1 - beta_t) p(x_i, z)^beta_t,   0 = beta_0 < beta_1 < ... < beta_T = 1

(Neal 2001, eq. 3).  A chain starts at ``z_0 ~ q0``; at step ``t`` its log-weight grows by
``(beta_t - beta_{t-1}) [log p(x_i, z_{t-1}) - log q0(z_{t-1})]`` and an HMC transition
leaving ``pi_t`` invariant moves it (Neal 2001, sec. 2; Wu et al. 2017, sec. 2.2).  The
weight of a chain is an unbiased estimate of ``p(x_i)``; with C chains per datapoint the
estimate is ``log (1/C) sum_c w_ic`` (log-mean-exp), a stochastic lower bound of
``log p(x_i)`` (Jensen).

* **Schedule**: ``"sigmoid"`` (default), ``gamma_t = sigmoid(delta (2t/T - 1))``,
  ``beta_t = (gamma_t - gamma_0) / (gamma_T - gamma_0)`` with ``delta = 4`` (Grosse,
  Ghahramani & Adams 2015, sec. 6.2; used by Wu et al. 2017), or ``"linear"``.
* **Transitions**: one HMC move per step (``leapfrog`` leapfrog steps, identity mass
  matrix, full momentum refresh; Neal 2011), per chain and datapoint, all chains and
  datapoints of a chunk in one vectorised pass.  The step size is per datapoint, adapted
  after every transition towards the acceptance rate ``target_accept`` (multiplied by 1.02
  when the chains' mean acceptance is above it, by 0.98 otherwise, clipped to
  ``[1e-4, 0.5]``), as Wu et al. 2017 do.  Adapting from the chains' own history makes the
  kernels depend on the run; the bias this introduces is not corrected (as in Wu et al.).
* **Any Pyro model** following the data plate convention (:mod:`ppl_gen.lvm.plates`): the
  latent values are drawn, then fed back with ``poutine.condition`` inside a vectorised
  particle plate, and every site's unscaled log-density is reduced to ``(chains, batch)`` by
  :func:`ppl_gen.infer.bounds._site_log_prob`, as the IWAE-K evaluator does.  Latents with a
  constrained support move in unconstrained space through ``biject_to(support)`` with the
  log-Jacobian added to every ``pi_t`` (it cancels in the weights).  Discrete latents are
  refused (sum them out in the model).
* **Standard errors** (per datapoint, over chains, the delta method): with normalised
  weights ``w~_c = w_c / sum w``, ``se(log mean w) ~= sd(w) / (sqrt(C) mean w) =
  sqrt((C sum w~_c^2 - 1) / (C - 1))``.  It measures only the spread of the weights seen;
  when the weights are heavy-tailed (too few steps) it is too small, and it does not
  measure the bias of a short schedule.  ``ess`` = ``1 / sum w~_c^2`` is reported with it.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.poutine.subsample_messenger import _Subsample
from torch.distributions import constraints

from ppl_gen.core.errors import PplGenError, require_positive_int
from ppl_gen.infer.bounds import PARTICLE_PLATE, _max_plate_nesting, _site_log_prob
from ppl_gen.lvm.plates import DATA_PLATE

SCHEDULES = ("sigmoid", "linear")
STEP_SIZE_RANGE = (1e-4, 0.5)


def annealing_schedule(steps: int, kind: str = "sigmoid", delta: float = 4.0) -> torch.Tensor:
    """Inverse temperatures ``beta_0 = 0 < ... < beta_T = 1``, ``(steps + 1,)`` float64.

    ``"sigmoid"``: Grosse, Ghahramani & Adams 2015, sec. 6.2 (``delta`` = their radius 4);
    ``"linear"``: evenly spaced.

    Raises:
        PplGenError: if ``steps`` is not a positive integer or ``kind`` is unknown.
    """
    require_positive_int("steps", steps)
    if kind not in SCHEDULES:
        raise PplGenError(f"schedule: must be one of {', '.join(SCHEDULES)}, got {kind!r}")
    t = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    if kind == "linear" or steps == 1:
        return t
    gamma = torch.sigmoid(delta * (2 * t - 1))
    return (gamma - gamma[0]) / (gamma[-1] - gamma[0])


def chain_log_mean_exp(log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``log (1/C) sum_c w_c``, its delta-method standard error and the ESS, per column.

    Args:
        log_w: ``(C, N)`` log-weights of C chains for N datapoints.

    Returns:
        ``(estimate, se, ess)``, each ``(N,)``; ``se`` is NaN when ``C = 1``.
    """
    c = log_w.shape[0]
    est = torch.logsumexp(log_w, 0) - math.log(c)
    w = torch.softmax(log_w, 0)
    sum_sq = (w * w).sum(0)
    se = (
        ((c * sum_sq - 1).clamp_min(0) / (c - 1)).sqrt()
        if c > 1
        else torch.full_like(est, math.nan)
    )
    return est, se, 1.0 / sum_sq


@dataclass(frozen=True)
class AISEstimate:
    """Per-datapoint AIS estimates of ``log p(x_i)``.

    Attributes:
        log_px: ``(N,)`` log-mean-exp over the chains of each datapoint's AIS weights
            (nats).  Forward AIS: a stochastic lower bound; reverse AIS (:mod:`bdmc`):
            a stochastic upper bound.
        log_px_se: ``(N,)`` Monte Carlo standard error of each ``log_px`` over the chains
            (delta method, see the module docstring), nats.
        ess: ``(N,)`` effective sample size of each datapoint's chain weights.
        acceptance: ``(N,)`` mean HMC acceptance rate over steps and chains.
        step_size: ``(N,)`` final leapfrog step size.
        steps, chains, leapfrog: T, C and the leapfrog steps per transition.
        schedule: the annealing schedule's name.
        seconds: wall time (seconds).
        direction: ``"forward"`` (guide/prior to posterior) or ``"reverse"``.
        log_weights: ``(N, C)`` chain log-weights, kept only when requested.
    """

    log_px: torch.Tensor
    log_px_se: torch.Tensor
    ess: torch.Tensor
    acceptance: torch.Tensor
    step_size: torch.Tensor
    steps: int
    chains: int
    leapfrog: int
    schedule: str
    seconds: float
    direction: str = "forward"
    log_weights: torch.Tensor | None = None

    @property
    def mean(self) -> float:
        """Mean ``log_px``, nats per datapoint."""
        return float(self.log_px.mean())

    @property
    def se(self) -> float:
        """Standard error of :attr:`mean` over datapoints (as for the ELBO/IWAE), nats."""
        n = self.log_px.numel()
        return float(self.log_px.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan

    @property
    def mc_se(self) -> float:
        """Monte Carlo standard error of :attr:`mean` for these datapoints (chains only):
        ``sqrt(sum_i se_i^2) / N``, nats."""
        return float(self.log_px_se.pow(2).sum().sqrt() / self.log_px.numel())

    @property
    def seconds_per_1000(self) -> float:
        """Wall time per 1,000 datapoints (seconds)."""
        return 1000.0 * self.seconds / self.log_px.numel()

    def summary(self) -> dict[str, float | int | str]:
        """Plain numbers: ``log_px`` (mean, nats/datapoint), ``se``, ``mc_se``, settings."""
        return {
            "log_px": self.mean,
            "se": self.se,
            "mc_se": self.mc_se,
            "mean_ess": float(self.ess.mean()),
            "acceptance": float(self.acceptance.mean()),
            "steps": self.steps,
            "chains": self.chains,
            "leapfrog": self.leapfrog,
            "schedule": self.schedule,
            "seconds": self.seconds,
            "direction": self.direction,
        }


def _skip(site: dict) -> bool:
    return (
        site["type"] != "sample"
        or site["infer"].get("is_auxiliary", False)
        or isinstance(site["fn"], _Subsample)
    )


class AnnealingTarget:
    """``log q0(z)`` and ``f(z) = log p(x, z) - log q0(z)`` of one chunk of rows as functions
    of the unconstrained latents ``u`` (a dict of tensors, chains along dim 0).

    Args:
        model, guide: Pyro callables of the data plate convention (``guide`` may be ``None``:
            then ``q0`` is the prior).
        x: ``(B, ...)`` rows; ``indices``/``size`` are passed to model and guide.
        chains: C, chains per row.
        max_plate_nesting: plate dims of model and guide (without the particle plate).

    Raises:
        PplGenError: if a latent site is discrete, lies outside the data plate, or the
            guide samples a site the model does not have.
    """

    def __init__(self, model, guide, x, indices, size, chains, max_plate_nesting) -> None:
        self.model, self.guide, self.x = model, guide, x
        self.kwargs = {"indices": indices, "size": size}
        self.chains = chains
        self.particle_dim = -(max_plate_nesting + 1)
        self.n_batch_dims = max_plate_nesting + 1
        self.latents: dict[str, dict] = {}

    def _plate(self):
        return pyro.plate(PARTICLE_PLATE, self.chains, dim=self.particle_dim)

    def initial(self) -> dict[str, torch.Tensor]:
        """Draw ``z_0 ~ q0`` and return it in unconstrained space (also records the sites)."""
        with self._plate():
            if self.guide is not None:
                gtr = poutine.trace(self.guide).get_trace(self.x, **self.kwargs)
                mtr = poutine.trace(poutine.replay(self.model, trace=gtr)).get_trace(
                    self.x, **self.kwargs
                )
            else:
                gtr, mtr = None, poutine.trace(self.model).get_trace(self.x, **self.kwargs)
        guide_sites = set()
        if gtr is not None:
            for name, site in gtr.nodes.items():
                if _skip(site):
                    continue
                if name not in mtr.nodes or mtr.nodes[name]["is_observed"]:
                    raise PplGenError(
                        f"guide: samples site {name!r}, which is not a latent of the model"
                    )
                guide_sites.add(name)
        self.guide_sites = guide_sites
        values = {}
        for name, site in mtr.nodes.items():
            if _skip(site) or site["is_observed"]:
                continue
            fn = site["fn"]
            if fn.support.is_discrete or site["infer"].get("enumerate"):
                raise PplGenError(
                    f"model: latent site {name!r} is discrete; AIS with HMC needs continuous "
                    "latents (sum it out in the model)"
                )
            frames = [f for f in site["cond_indep_stack"] if f.name == DATA_PLATE]
            if not frames:
                raise PplGenError(
                    f"model: site {name!r} is outside pyro.plate({DATA_PLATE!r}); AIS needs "
                    "every latent variable inside the data plate"
                )
            value = site["value"]
            axis = value.dim() - len(fn.event_shape) + frames[0].dim
            if value.dim() - len(fn.event_shape) != self.n_batch_dims or value.shape[0] != (
                self.chains
            ):
                raise PplGenError(
                    f"model: latent site {name!r} has value shape {tuple(value.shape)}, not "
                    "batched over the particle and data plates"
                )
            support = fn.support
            real = support is constraints.real or (
                isinstance(support, constraints.independent)
                and support.base_constraint is constraints.real
            )
            transform = None if real else biject_to(support)
            self.latents[name] = {"axis": axis, "transform": transform}
            values[name] = value.detach() if real else transform.inv(value).detach()
        if not self.latents:
            raise PplGenError("model: no latent sample sites found inside the data plate")
        return values

    def unconstrain(self, z: dict[str, torch.Tensor], like: dict[str, torch.Tensor]) -> dict:
        """Constrained values ``z`` (e.g. exact posterior draws, without the particle dim)
        broadcast to the shapes of ``like`` and mapped to unconstrained space."""
        out = {}
        for name, info in self.latents.items():
            value = z[name]
            if info["transform"] is not None:
                value = info["transform"].inv(value)
            out[name] = value.detach().expand(like[name].shape).clone()
        return out

    def per_point(self, name: str, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` (aligned with site ``name``'s value) to ``(C, B)``."""
        axis = self.latents[name]["axis"]
        other = [d for d in range(t.dim()) if d not in (0, axis)]
        if other:
            t = t.sum(other, keepdim=True)
        return t.reshape(self.chains, -1)

    def along(self, name: str, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """View a ``(C, B)`` (or ``(B,)``) tensor so it broadcasts over site ``name``."""
        axis = self.latents[name]["axis"]
        shape = [1] * ndim
        shape[axis] = t.shape[-1]
        if t.dim() == 2:
            shape[0] = t.shape[0]
        return t.reshape(shape)

    def evaluate(self, u: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log q0(z) + log|dz/du|, f(z))``, each ``(C, B)``, differentiable in ``u``."""
        z, base = {}, 0.0
        for name, info in self.latents.items():
            t = info["transform"]
            if t is None:
                z[name] = u[name]
            else:
                z[name] = t(u[name])
                base = base + self.per_point(name, t.log_abs_det_jacobian(u[name], z[name]))
        pd = self.particle_dim
        with self._plate():
            mtr = poutine.trace(poutine.condition(self.model, data=z)).get_trace(
                self.x, **self.kwargs
            )
            if self.guide is not None:
                gdata = {k: z[k] for k in self.guide_sites}
                gtr = poutine.trace(poutine.condition(self.guide, data=gdata)).get_trace(
                    self.x, **self.kwargs
                )
        log_q0, f = 0.0, 0.0
        for name, site in mtr.nodes.items():
            if _skip(site):
                continue
            lp = _site_log_prob(name, site, pd)
            if name in self.latents and name not in self.guide_sites:
                log_q0 = log_q0 + lp  # drawn from the prior: part of q0, cancels in f
            else:
                f = f + lp
        if self.guide is not None:
            for name in self.guide_sites:
                lq = _site_log_prob(name, gtr.nodes[name], pd)
                log_q0, f = log_q0 + lq, f - lq
        return base + log_q0, f


def _grad(target: AnnealingTarget, u: dict, beta: float):
    """``log pi_beta(u)`` ``(C, B)``, its gradient (dict) and ``f(u)`` ``(C, B)``."""
    with torch.enable_grad():
        leaves = {k: v.detach().requires_grad_(True) for k, v in u.items()}
        base, f = target.evaluate(leaves)
        log_pi = base + beta * f
        grads = torch.autograd.grad(log_pi.sum(), list(leaves.values()))
    return log_pi.detach(), dict(zip(leaves, (g.detach() for g in grads), strict=True)), f.detach()


def hmc_transition(target, u, beta, eps, leapfrog, state):
    """One HMC move leaving ``pi_beta`` invariant for every (chain, row).

    Args:
        target: the :class:`AnnealingTarget`.
        u: current unconstrained latents.
        beta: inverse temperature.
        eps: ``(B,)`` step size per row.
        leapfrog: leapfrog steps L.
        state: ``(log_pi, grad)`` at ``u`` for this ``beta``.

    Returns:
        ``(u_new, accepted (C, B) bool, f(u_new) (C, B))``.
    """
    log_pi0, grad = state
    p = {k: torch.randn_like(v) for k, v in u.items()}
    kinetic0 = sum(target.per_point(k, v * v) for k, v in p.items()) / 2
    e = {k: target.along(k, eps, v.dim()) for k, v in u.items()}
    q = dict(u)
    p = {k: p[k] + e[k] / 2 * grad[k] for k in p}
    for step in range(leapfrog):
        q = {k: q[k] + e[k] * p[k] for k in q}
        log_pi1, grad1, f1 = _grad(target, q, beta)
        scale = 1.0 if step < leapfrog - 1 else 0.5
        p = {k: p[k] + scale * e[k] * grad1[k] for k in p}
    kinetic1 = sum(target.per_point(k, v * v) for k, v in p.items()) / 2
    log_accept = (log_pi1 - kinetic1) - (log_pi0 - kinetic0)
    accept = torch.rand_like(log_accept).log() < log_accept
    accept &= torch.isfinite(log_accept)
    new_u = {k: torch.where(target.along(k, accept, v.dim()), q[k], v) for k, v in u.items()}
    return new_u, accept, f1


def run_chains(
    target: AnnealingTarget,
    u: dict[str, torch.Tensor],
    betas: torch.Tensor,
    *,
    leapfrog: int,
    step_size: float | torch.Tensor,
    target_accept: float | None,
    reverse: bool = False,
    record_step_sizes: bool = False,
    bar=None,
):
    """Run AIS over ``betas`` for one chunk.

    Forward (``reverse=False``): for ``t = 1..T`` add ``(beta_t - beta_{t-1}) f(z)`` to the
    log-weight, then move ``z`` with the HMC kernel of ``pi_t``.  Reverse (Grosse et al.
    2015, sec. 4): start from posterior draws ``u`` and for ``t = T..1`` move ``z`` with the
    kernel of ``pi_t``, then add ``(beta_{t-1} - beta_t) f(z)``; ``-log mean exp`` of the
    result is a stochastic upper bound.

    Args:
        step_size: initial ``(B,)`` step sizes (or a float), or with ``target_accept=None``
            a fixed ``(T, B)`` schedule (e.g. recorded by a forward run, used reversed).

    Returns:
        ``(log_w (C, B) float64, u, acceptance (B,), final step size (B,), steps (T, B) or
        None)``.
    """
    c, b = target.chains, target.x.shape[0]
    dev, dt = target.x.device, target.x.dtype
    n = betas.numel() - 1
    fixed = torch.is_tensor(step_size) and step_size.dim() == 2
    eps = step_size if fixed else torch.full((b,), float(step_size), device=dev, dtype=dt)
    log_w = torch.zeros(c, b, device=dev, dtype=torch.float64)
    accepted = torch.zeros(b, device=dev, dtype=torch.float64)
    record = [] if record_step_sizes else None
    order = range(n, 0, -1) if reverse else range(1, n + 1)
    for t in order:
        beta, delta = float(betas[t]), float(betas[t] - betas[t - 1])
        log_pi, grad, f = _grad(target, u, beta)
        if not reverse:
            log_w += delta * f.double()  # f at z_{t-1}, before the move
        e = eps[t - 1] if fixed else eps
        u, acc, f_new = hmc_transition(target, u, beta, e, leapfrog, (log_pi, grad))
        rate = acc.double().mean(0)
        accepted += rate
        if record is not None:
            record.append(e.clone())
        if not fixed and target_accept is not None:
            up = rate.to(dt) > target_accept
            eps = (eps * torch.where(up, 1.02, 0.98)).clamp(*STEP_SIZE_RANGE)
        if reverse:
            log_w -= delta * torch.where(acc, f_new, f).double()  # f after the move
        if bar is not None:
            bar.update(1)
    final = eps[0] if fixed else eps
    steps = torch.stack(record) if record is not None else None
    return log_w, u, accepted / n, final, steps


def check_ais_args(steps, chains, leapfrog, step_size, target_accept, schedule) -> None:
    """Validate the AIS settings (one-line :class:`PplGenError` naming the argument)."""
    require_positive_int("steps", steps)
    require_positive_int("chains", chains)
    require_positive_int("leapfrog", leapfrog)
    if (
        not isinstance(step_size, (int, float))
        or isinstance(step_size, bool)
        or not (math.isfinite(step_size) and step_size > 0)
    ):
        raise PplGenError(f"step_size: must be a positive number, got {step_size!r}")
    if target_accept is not None and not (
        isinstance(target_accept, (int, float)) and 0 < target_accept < 1
    ):
        raise PplGenError(f"target_accept: must be in (0, 1) or None, got {target_accept!r}")
    if schedule not in SCHEDULES:
        raise PplGenError(f"schedule: must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


def progress_bar(total: int, enabled: bool | None, desc: str):
    """A tqdm bar on stderr, only when ``enabled`` (default: stderr is a terminal)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return contextlib.nullcontext(None)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False)


def seeded(seed: int | None, device: torch.device):
    """Fork the global RNGs (the caller's are left untouched) and seed them, or do nothing."""
    if seed is None:
        return contextlib.nullcontext()
    devices = [device] if device.type == "cuda" else []
    stack = contextlib.ExitStack()
    stack.enter_context(torch.random.fork_rng(devices=devices))
    torch.manual_seed(seed)
    return stack


def chunk_rows(n: int, chains: int, batch_size: int | None, max_samples_per_chunk: int) -> int:
    """Rows per chunk so that rows x chains stays under ``max_samples_per_chunk``."""
    if batch_size is not None:
        return require_positive_int("batch_size", batch_size)
    require_positive_int("max_samples_per_chunk", max_samples_per_chunk)
    return max(1, min(n, max_samples_per_chunk // chains))


def evaluate_ais(
    model: Callable,
    x: torch.Tensor,
    guide: Callable | None = None,
    *,
    steps: int = 1000,
    chains: int = 16,
    leapfrog: int = 10,
    step_size: float = 0.1,
    target_accept: float | None = 0.65,
    schedule: str = "sigmoid",
    seed: int | None = None,
    batch_size: int | None = None,
    max_samples_per_chunk: int = 4096,
    indices: torch.Tensor | None = None,
    size: int | None = None,
    keep_log_weights: bool = False,
    progress: bool | None = None,
) -> AISEstimate:
    """AIS estimate of ``log p(x_i)`` for every row of ``x`` (Neal 2001; Wu et al. 2017).

    Args:
        model: Pyro model ``model(x, indices=None, size=None)`` of the data plate convention
            with continuous latents inside the data plate (any number of sites, any support).
        x: ``(N, ...)`` datapoints on the model's device; computed in ``x``'s dtype.
        guide: optional guide ``q(z | x)`` of the same convention: the initial distribution
            (``None``: the model's prior).  Latents the guide does not sample start from
            their prior.
        steps: T, number of intermediate distributions (>= 1).
        chains: C, independent AIS chains per datapoint (>= 1; >= 2 for a standard error).
        leapfrog: leapfrog steps per HMC transition.
        step_size: initial leapfrog step size (in unconstrained space).
        target_accept: acceptance rate the step size is adapted to, per datapoint
            (``None``: keep ``step_size`` fixed).
        schedule: ``"sigmoid"`` or ``"linear"`` (see :func:`annealing_schedule`).
        seed: seeds a forked copy of the global RNGs (``None``: use them as they are).
        batch_size: rows per chunk (default: ``max_samples_per_chunk // chains``), so that
            memory stays bounded.
        indices, size: the rows' positions and the dataset size (per-datapoint guides).
        keep_log_weights: also return the ``(N, C)`` chain log-weights.
        progress: tqdm bar on stderr (default: only when stderr is a terminal).

    Returns:
        :class:`AISEstimate` with ``log_px: (N,)`` nats and ``log_px_se: (N,)`` (on CPU).

    Raises:
        PplGenError: a bad argument (named), empty ``x``, a discrete latent or a latent
            outside the data plate.
    """
    check_ais_args(steps, chains, leapfrog, step_size, target_accept, schedule)
    if not torch.is_tensor(x) or x.dim() == 0 or x.shape[0] == 0:
        raise PplGenError("x: expected a non-empty tensor of datapoints (N, ...)")
    n = x.shape[0]
    if indices is None:
        indices = torch.arange(n, device=x.device)
    size = n if size is None else size
    rows = chunk_rows(n, chains, batch_size, max_samples_per_chunk)
    betas = annealing_schedule(steps, schedule)
    parts: dict[str, list] = {k: [] for k in ("lw", "acc", "eps")}
    t0 = time.perf_counter()
    no_autocast = torch.autocast(device_type=x.device.type, enabled=False)
    n_chunks = math.ceil(n / rows)
    with (
        torch.no_grad(),
        pyro.validation_enabled(False),
        no_autocast,
        seeded(seed, x.device),
        progress_bar(steps * n_chunks, progress, "AIS") as bar,
    ):
        mpn = _max_plate_nesting(
            model,
            guide if guide is not None else model,
            (x[:1],),
            {"indices": indices[:1], "size": size},
        )
        for start in range(0, n, rows):
            xb, ib = x[start : start + rows], indices[start : start + rows]
            target = AnnealingTarget(model, guide, xb, ib, size, chains, mpn)
            u = target.initial()
            lw, _, acc, eps, _ = run_chains(
                target,
                u,
                betas,
                leapfrog=leapfrog,
                step_size=step_size,
                target_accept=target_accept,
                bar=bar,
            )
            parts["lw"].append(lw.cpu())
            parts["acc"].append(acc.cpu())
            parts["eps"].append(eps.cpu())
    log_w = torch.cat(parts["lw"], 1)
    est, se, ess = chain_log_mean_exp(log_w)
    return AISEstimate(
        log_px=est.to(x.dtype),
        log_px_se=se.to(x.dtype),
        ess=ess.to(x.dtype),
        acceptance=torch.cat(parts["acc"]).to(x.dtype),
        step_size=torch.cat(parts["eps"]).to(x.dtype),
        steps=steps,
        chains=chains,
        leapfrog=leapfrog,
        schedule=schedule,
        seconds=time.perf_counter() - t0,
        log_weights=log_w.T.to(x.dtype) if keep_log_weights else None,
    )


__all__ = ["AISEstimate", "AnnealingTarget", "annealing_schedule", "evaluate_ais"]
