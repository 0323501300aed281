"""Data parallelism over ``torch.distributed``: one small layer every trainer shares.

Processes are started by PyTorch's launcher, never by ppl_gen::

    torchrun --nproc-per-node 2 -m ppl_gen train vae ...              # one node
    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29500 -m ppl_gen train vae ...      # several nodes

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`init_from_env` reads them, joins the process group (``gloo`` on
CPU, ``nccl`` on CUDA, each process on GPU ``LOCAL_RANK``) and returns a
:class:`DistributedContext`.  Without those variables it returns a single-process context
(``world_size == 1``, no process group), and every helper below is then a no-op, so
single-process code paths are unchanged.

Data are split like :class:`torch.utils.data.DistributedSampler` splits them: every rank
draws the same permutation (same seed) and takes every ``world_size``-th element starting
at its rank (:meth:`DistributedContext.shard`); :meth:`DistributedContext.gather_shards`
puts per-datapoint results back in the original order on every rank.

How a trainer adopts it (the GAN and DANN trainers, for example)::

    from ppl_gen.core import distributed

    ctx = distributed.init_from_env(config.device)        # device = cuda:LOCAL_RANK or cpu
    net = ctx.wrap(net.to(ctx.device))                      # DistributedDataParallel if > 1
    sampler = ctx.sampler(dataset, shuffle=True, seed=seed)  # DistributedSampler
    loader = DataLoader(dataset, batch_size, sampler=sampler, pin_memory=ctx.pin_memory)
    for epoch in ...:
        sampler.set_epoch(epoch)                            # same permutation on every rank
        ...                                                 # DDP averages the gradients
        mean_loss = ctx.all_reduce_mean(loss.detach())
        if ctx.is_main:
            save_checkpoint(...)                            # rank 0 alone writes
    ctx.barrier()

Batch norm under data parallelism: :func:`sync_batchnorm` (:mod:`ppl_gen.core.batchnorm`,
re-exported here) replaces every ``BatchNorm*d`` layer by one whose training-mode
statistics are those of the *global* batch (the union of every rank's part), so a step on
``world_size`` shards normalises exactly like one process on the whole batch.  On CUDA that
is :class:`torch.nn.SyncBatchNorm`; PyTorch's version refuses CPU tensors, so on CPU (gloo)
it is :class:`GlobalBatchNorm`, which all-reduces the per-channel sums with a
differentiable all-reduce.

A rank that crashes closes its connections, and the others stop at once with
:class:`RankFailed`.  A rank that freezes (stopped with ``SIGSTOP``, hung in a driver,
swapped out) closes nothing: every collective waits at most the **collective timeout**,
:data:`DEFAULT_TIMEOUT_S` = 60 s unless the environment variable
``PPL_GEN_COLLECTIVE_TIMEOUT`` gives another number of seconds (or ``init_from_env``'s
``timeout_s``), then fails with :class:`RankFailed` saying which rank did not answer within
that time.  The failing rank exits (status 1) and ``torchrun`` then stops the job: it sends
the other workers ``SIGTERM`` and, to a frozen one that cannot act on it, ``SIGKILL`` 30 s
later.  So a job with a frozen rank ends within about timeout + 30 s (90 s by default).
Raise the timeout for steps that legitimately keep one rank busy longer (e.g. a long
evaluation on rank 0 while the others wait).

``DistributedDataParallel`` averages gradients only for modules whose ``forward`` is
called through the wrapper; Pyro's ELBOs call the model and guide themselves, so the SVI
trainer (:mod:`ppl_gen.infer.training`) averages gradients with :meth:`all_reduce_sum` instead
(see there).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist
from torch import nn

from ppl_gen.core.batchnorm import GlobalBatchNorm, sync_batchnorm
from ppl_gen.core.checkpoint import load_checkpoint
from ppl_gen.core.device import resolve_device, to_device
from ppl_gen.core.errors import PplGenError

T = TypeVar("T")

#: Environment variables torchrun sets for every worker.
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: Default collective timeout in seconds (module docs).
DEFAULT_TIMEOUT_S = 60.0
#: Environment variable overriding :data:`DEFAULT_TIMEOUT_S` (seconds, > 0).
TIMEOUT_ENV = "PPL_GEN_COLLECTIVE_TIMEOUT"


def collective_timeout() -> float:
    """The collective timeout in seconds: ``$PPL_GEN_COLLECTIVE_TIMEOUT`` if set, else
    :data:`DEFAULT_TIMEOUT_S`.

    Raises:
        PplGenError: the variable is set but not a positive number of seconds.
    """
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise PplGenError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}")
    return value


class RankFailed(RuntimeError):
    """A collective operation failed, usually because another rank crashed.

    The message names this rank and the operation; the crashed rank prints its own error.
    """


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a data-parallel job.

    Attributes:
        rank: global rank, ``0 .. world_size - 1``.
        world_size: number of processes (1: not distributed).
        local_rank: rank on this node (selects the GPU).
        device: the device this process computes on.
        backend: ``"gloo"``, ``"nccl"`` or ``None`` (single process).
        timeout_s: how long a collective waits for the other ranks (seconds).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints, shows progress bars and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def pin_memory(self) -> bool:
        """Whether host batches should be pinned (page-locked) for the device: CUDA only."""
        return self.device.type == "cuda"

    # ------------------------------------------------------------------ data split

    def shard(self, items: torch.Tensor | Sequence[T]) -> Any:
        """This rank's part of ``items``: elements ``rank, rank + W, rank + 2W, ...``.

        The splitting rule of :class:`torch.utils.data.DistributedSampler` (without its
        padding: ranks differ by at most one element, and no element is repeated).

        Args:
            items: ``(N, ...)`` tensor or a sequence (e.g. indices of a shared permutation).

        Returns:
            ``items[rank::world_size]`` (the whole of ``items`` when ``world_size == 1``).
        """
        if not self.distributed:
            return items
        return items[self.rank :: self.world_size]

    def shard_size(self, n: int) -> int:
        """Number of elements :meth:`shard` gives this rank out of ``n``."""
        return len(range(self.rank, n, self.world_size))

    def sampler(
        self, dataset: Any, *, shuffle: bool = True, seed: int = 0, drop_last: bool = False
    ) -> torch.utils.data.Sampler:
        """A :class:`torch.utils.data.DistributedSampler` for ``dataset`` (call its
        ``set_epoch(epoch)`` every epoch); a plain random / sequential sampler for one
        process."""
        if self.distributed:
            return torch.utils.data.DistributedSampler(
                dataset,
                num_replicas=self.world_size,
                rank=self.rank,
                shuffle=shuffle,
                seed=seed,
                drop_last=drop_last,
            )
        if shuffle:
            return torch.utils.data.RandomSampler(
                dataset, generator=torch.Generator().manual_seed(seed)
            )
        return torch.utils.data.SequentialSampler(dataset)

    def gather_shards(self, part: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`shard`: the full ``(N, ...)`` tensor, in the original order.

        Args:
            part: ``(n_r, ...)`` this rank's rows (``n_r`` may differ by one across ranks;
                trailing shape and dtype must agree).

        Returns:
            ``(sum_r n_r, ...)`` on ``part``'s device, identical on every rank.

        Raises:
            RankFailed: if another rank stopped answering.
        """
        if not self.distributed:
            return part
        parts = self.all_gather(part)
        n = sum(p.shape[0] for p in parts)
        out = part.new_empty((n, *part.shape[1:]))
        for r, p in enumerate(parts):
            out[r :: self.world_size] = p
        return out

    # ------------------------------------------------------------------ collectives

    def failure(self, what: str, exc: BaseException) -> RankFailed:
        """The :class:`RankFailed` for a communication error ``exc`` during ``what``: a
        timeout names the rank(s) that did not answer and the time waited; anything else
        says another rank probably crashed.  Both quote the backend's first line."""
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        first = re.sub(r"^\[[^\]]*\]\s*", "", first)  # gloo's "[source.cc:561] " prefix
        me = f"rank {self.rank} of {self.world_size}"
        if _looks_like_timeout(first):
            return RankFailed(
                f"{me}: {what} failed: {self._silent_peers(first)} did not answer within "
                f"{self.timeout_s:g} s (stopped, frozen or too slow; {TIMEOUT_ENV} sets the "
                f"limit) [{first[:160]}]"
            )
        return RankFailed(
            f"{me}: {what} failed, probably because another rank crashed (see its error "
            f"above) [{first[:160]}]"
        )

    def _silent_peers(self, message: str) -> str:
        if self.world_size == 2:
            return f"rank {1 - self.rank}"
        lists = re.findall(r"\branks?\s+(\d+(?:\s*(?:,|and)\s*\d+)*)", message, re.IGNORECASE)
        named = sorted({int(r) for group in lists for r in re.findall(r"\d+", group)} - {self.rank})
        named = [r for r in named if r < self.world_size]
        if named:
            return ("rank " if len(named) == 1 else "ranks ") + ", ".join(map(str, named))
        return "another rank"

    def _collective(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (RuntimeError, torch_dist.DistBackendError) as exc:
            raise self.failure(what, exc) from exc

    def all_reduce_sum(self, tensor: torch.Tensor, what: str = "all_reduce") -> torch.Tensor:
        """Sum ``tensor`` over ranks, in place, and return it (identical on every rank)."""
        if self.distributed:
            self._collective(what, lambda: torch_dist.all_reduce(tensor))
        return tensor

    def all_reduce_mean(self, tensor: torch.Tensor, what: str = "all_reduce") -> torch.Tensor:
        """Average ``tensor`` over ranks, in place, and return it."""
        if self.distributed:
            self.all_reduce_sum(tensor, what).div_(self.world_size)
        return tensor

    def all_reduce_float(self, value: float, what: str = "all_reduce") -> float:
        """Sum a Python number over ranks (float64 on the context's device)."""
        if not self.distributed:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        return float(self.all_reduce_sum(t, what))

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``tensor``, as a list indexed by rank; first dims may differ.

        Args:
            tensor: ``(n_r, ...)``; the trailing shape and dtype must agree across ranks.

        Returns:
            ``[t_0, ..., t_{W-1}]`` with ``t_r: (n_r, ...)``, on ``tensor``'s device.
        """
        if not self.distributed:
            return [tensor]
        device = self.device if self.backend == "nccl" else torch.device("cpu")
        local = tensor.detach().to(device).contiguous()
        sizes = self._collective(
            "all_gather (sizes)",
            lambda: _gather_sizes(local.shape[0] if local.dim() else 1, self.world_size, device),
        )
        biggest = max(sizes)
        padded = local.new_zeros((biggest, *local.shape[1:]))
        padded[: local.shape[0]] = local
        bufs = [torch.empty_like(padded) for _ in range(self.world_size)]
        self._collective("all_gather", lambda: torch_dist.all_gather(bufs, padded))
        return [b[:s].to(tensor.device) for b, s in zip(bufs, sizes, strict=True)]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's picklable ``obj``, as a list indexed by rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        self._collective("all_gather_object", lambda: torch_dist.all_gather_object(out, obj))
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s picklable ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        self._collective("broadcast", lambda: torch_dist.broadcast_object_list(box, src=src))
        return box[0]

    def broadcast_parameters(self, params: Sequence[torch.Tensor], src: int = 0) -> None:
        """Copy rank ``src``'s values of ``params`` to every rank, in place (as DDP does at
        construction)."""
        if not self.distributed:
            return
        for p in params:
            self._collective("broadcast", lambda p=p: torch_dist.broadcast(p.data, src=src))

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.distributed:
            self._collective("barrier", torch_dist.barrier)

    def finish(self) -> None:
        """End of a job: every rank but 0 records that it finished (and returns at once);
        rank 0 waits until all have, at most the collective timeout, so a rank that froze
        after its last collective still ends the job.  Uses the process group's key-value
        store, so no rank waits for rank 0's final writes.

        Raises:
            RankFailed: on rank 0, naming the ranks that did not finish within the timeout.
        """
        if not self.distributed:
            return
        store = torch_dist.distributed_c10d._get_default_store()
        if not self.is_main:
            store.set(f"ppl_gen/finished/{self.rank}", b"1")
            return
        missing = list(range(1, self.world_size))
        deadline = time.monotonic() + self.timeout_s
        while missing:
            missing = [r for r in missing if not store.check([f"ppl_gen/finished/{r}"])]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if missing:
            who = ("rank " if len(missing) == 1 else "ranks ") + ", ".join(map(str, missing))
            raise RankFailed(
                f"rank 0 of {self.world_size}: finishing failed: {who} did not answer within "
                f"{self.timeout_s:g} s (stopped, frozen or too slow; {TIMEOUT_ENV} sets the "
                "limit)"
            )

    def wrap(self, module: nn.Module, **ddp_kwargs) -> nn.Module:
        """``DistributedDataParallel(module)`` when distributed (on this rank's GPU for CUDA),
        else ``module`` itself.  Its ``forward`` must be called through the wrapper."""
        if not self.distributed:
            return module
        if self.device.type == "cuda":
            ddp_kwargs.setdefault("device_ids", [self.device.index])
        return nn.parallel.DistributedDataParallel(module, **ddp_kwargs)

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Turn a communication failure inside the block (e.g. DDP's gradient all-reduce in
        ``loss.backward()`` when another rank crashed) into :class:`RankFailed`.

        Raises:
            RankFailed: naming this rank and ``what``; single process: errors pass as they are.
        """
        if not self.distributed:
            yield
            return
        try:
            yield
        except RankFailed:
            raise
        except (RuntimeError, torch_dist.DistBackendError) as exc:
            if isinstance(exc, torch_dist.DistBackendError) or _looks_like_lost_peer(str(exc)):
                raise self.failure(what, exc) from exc
            raise

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` on this rank's device; a host tensor bound for CUDA is copied from
        pinned (page-locked) memory without blocking the host."""
        if tensor.device == self.device:
            return tensor
        if self.pin_memory and tensor.device.type == "cpu":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def rng_states(self) -> list[dict]:
        """Every rank's torch random state (CPU, and this rank's GPU on CUDA), as a list
        indexed by rank: what a checkpoint stores so that a resumed job continues each rank's
        own stream (dropout masks, noise)."""
        state = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return self.all_gather_object(state)

    def set_rng_state(self, ranks: Sequence[dict] | None, fallback_seed: int) -> None:
        """Restore this rank's entry of :meth:`rng_states`; if ``ranks`` is missing or was
        saved by another number of processes, seed a fresh stream with ``fallback_seed +
        rank``."""
        if ranks is not None and len(ranks) == self.world_size:
            state = ranks[self.rank]
            torch.set_rng_state(state["torch"].cpu())
            if "cuda" in state and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["cuda"].cpu(), self.device)
        else:
            torch.manual_seed(fallback_seed + self.rank)

    def rank_zero_only(self, fn: Callable[..., T]) -> Callable[..., T | None]:
        """``fn`` wrapped to run on rank 0 only (``None`` elsewhere)."""

        def wrapper(*args, **kwargs):
            return fn(*args, **kwargs) if self.is_main else None

        return wrapper


def _looks_like_lost_peer(text: str) -> bool:
    """Whether an error message is gloo's / NCCL's / DDP's report of a vanished peer."""
    keys = ("connection", "peer", "gloo", "nccl", "timed out", "timeout", "broken pipe")
    return any(k in text.lower() for k in keys)


def _looks_like_timeout(text: str) -> bool:
    """Whether a backend message reports a wait that ran out (gloo: ``Timed out waiting
    10000ms for recv operation to complete``; NCCL's watchdog: ``... ran for N
    milliseconds before timing out``)."""
    low = text.lower()
    return any(k in low for k in ("timed out", "timeout", "timing out", "deadline"))


def _gather_sizes(n: int, world: int, device: torch.device) -> list[int]:
    mine = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(mine) for _ in range(world)]
    torch_dist.all_gather(sizes, mine)
    return [int(s) for s in sizes]


def load_for_resume(path: str | os.PathLike, ctx: DistributedContext) -> dict | None:
    """The checkpoint at ``path`` to resume from (``None`` if there is none): rank 0 reads
    it and sends it to the other ranks, so only rank 0 needs the file.  Tensors land on
    ``ctx.device``.

    Raises:
        PplGenError: an unreadable checkpoint (on every rank).
    """
    path = os.fspath(path)
    if not ctx.distributed:
        return load_checkpoint(path, map_location=ctx.device) if os.path.exists(path) else None
    state, error = None, None
    if ctx.is_main and os.path.exists(path):
        try:
            state = load_checkpoint(path, map_location="cpu")
        except PplGenError as exc:
            error = str(exc)
    state, error = ctx.broadcast_object((state, error))
    if error is not None:
        raise PplGenError(error)
    return to_device(state, ctx.device) if state is not None else None


def launched_by_torchrun() -> bool:
    """Whether torchrun's variables (``WORLD_SIZE``, ``RANK``, ...) are in the environment."""
    return all(v in os.environ for v in ("RANK", "WORLD_SIZE"))


_CURRENT: DistributedContext | None = None


def init_from_env(
    device_spec: str | torch.device | None = "auto",
    backend: str | None = None,
    *,
    timeout_s: float | None = None,
) -> DistributedContext:
    """Join the process group torchrun set up, or describe a single process.

    Idempotent: a second call returns the same context (the device request must agree).

    Args:
        device_spec: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.  Under torchrun with CUDA,
            each process takes GPU ``LOCAL_RANK`` (``cuda:N`` is then not allowed, since
            ranks would share a GPU).
        backend: ``gloo`` / ``nccl``; default ``nccl`` on CUDA, ``gloo`` on CPU.
        timeout_s: how long a collective waits for the other ranks (seconds); default
            :func:`collective_timeout` (``$PPL_GEN_COLLECTIVE_TIMEOUT``, else 60 s).

    Returns:
        The :class:`DistributedContext`; ``world_size == 1`` without torchrun.

    Raises:
        PplGenError: bad device request, torchrun's variables are malformed, or a bad
            timeout.
    """
    global _CURRENT
    device = resolve_device(device_spec)
    if _CURRENT is not None and _CURRENT.distributed and torch_dist.is_initialized():
        if device.type != _CURRENT.device.type:
            raise PplGenError(
                f"device {device_spec}: this job already runs on {_CURRENT.device.type}"
            )
        return _CURRENT
    if not launched_by_torchrun() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistributedContext(device=device)
    try:
        int(os.environ["RANK"])
        world = int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise PplGenError(
            "RANK / WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun)"
        ) from None
    if device.type == "cuda":
        if str(device_spec).strip().lower().startswith("cuda:") and world > 1:
            raise PplGenError(
                f"device {device_spec}: under torchrun use --device cuda (or auto); "
                "every process takes GPU LOCAL_RANK"
            )
        if local_rank >= torch.cuda.device_count():
            raise PplGenError(
                f"device cuda: LOCAL_RANK {local_rank} but only "
                f"{torch.cuda.device_count()} CUDA device(s) on this node "
                "(use nproc_per_node <= the number of GPUs)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    timeout_s = collective_timeout() if timeout_s is None else float(timeout_s)
    if not timeout_s > 0:
        raise PplGenError(f"timeout_s must be a positive number of seconds, got {timeout_s}")
    if not torch_dist.is_initialized():
        kwargs = {"timeout": datetime.timedelta(seconds=timeout_s)}
        if device.type == "cuda":
            kwargs["device_id"] = device
        torch_dist.init_process_group(backend=backend, **kwargs)
    _CURRENT = DistributedContext(
        rank=torch_dist.get_rank(),
        world_size=torch_dist.get_world_size(),
        local_rank=local_rank,
        device=device,
        backend=backend,
        timeout_s=timeout_s,
    )
    return _CURRENT


def current(device_spec: str | torch.device | None = "auto") -> DistributedContext:
    """The active context: the process group's if one was joined, else single process."""
    if _CURRENT is not None and torch_dist.is_initialized():
        return _CURRENT
    return DistributedContext(device=resolve_device(device_spec))


def teardown() -> None:
    """Leave the process group (if this module joined one); safe to call twice."""
    global _CURRENT
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()
    _CURRENT = None


def single_process(device: str | torch.device = "cpu") -> DistributedContext:
    """A one-process context on ``device`` (the default when not launched by torchrun)."""
    return DistributedContext(device=resolve_device(device))


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TIMEOUT_ENV",
    "DistributedContext",
    "GlobalBatchNorm",
    "RankFailed",
    "collective_timeout",
    "current",
    "init_from_env",
    "launched_by_torchrun",
    "load_for_resume",
    "single_process",
    "sync_batchnorm",
    "teardown",
]
