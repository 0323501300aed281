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

    from ppl_gen import distributed

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

``DistributedDataParallel`` averages gradients only for modules whose ``forward`` is
called through the wrapper; Pyro's ELBOs call the model and guide themselves, so the SVI
trainer (:mod:`ppl_gen.training`) averages gradients with :meth:`all_reduce_sum` instead
(see there).
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist
from torch import nn

from ppl_gen.device import resolve_device
from ppl_gen.errors import PplGenError

T = TypeVar("T")

#: Environment variables torchrun sets for every worker.
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


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
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

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

    def _collective(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (RuntimeError, torch_dist.DistBackendError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            first = re.sub(r"^\[[^\]]*\]\s*", "", first)  # gloo's "[source.cc:561] " prefix
            raise RankFailed(
                f"rank {self.rank} of {self.world_size}: {what} failed, probably because "
                f"another rank crashed (see its error above) [{first[:160]}]"
            ) from exc

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

    def wrap(self, module: nn.Module, **ddp_kwargs) -> nn.Module:
        """``DistributedDataParallel(module)`` when distributed (on this rank's GPU for CUDA),
        else ``module`` itself.  Its ``forward`` must be called through the wrapper."""
        if not self.distributed:
            return module
        if self.device.type == "cuda":
            ddp_kwargs.setdefault("device_ids", [self.device.index])
        return nn.parallel.DistributedDataParallel(module, **ddp_kwargs)

    def rank_zero_only(self, fn: Callable[..., T]) -> Callable[..., T | None]:
        """``fn`` wrapped to run on rank 0 only (``None`` elsewhere)."""

        def wrapper(*args, **kwargs):
            return fn(*args, **kwargs) if self.is_main else None

        return wrapper


def _gather_sizes(n: int, world: int, device: torch.device) -> list[int]:
    mine = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(mine) for _ in range(world)]
    torch_dist.all_gather(sizes, mine)
    return [int(s) for s in sizes]


def launched_by_torchrun() -> bool:
    """Whether torchrun's variables (``WORLD_SIZE``, ``RANK``, ...) are in the environment."""
    return all(v in os.environ for v in ("RANK", "WORLD_SIZE"))


_CURRENT: DistributedContext | None = None


def init_from_env(
    device_spec: str | torch.device | None = "auto",
    backend: str | None = None,
    *,
    timeout_s: float = 600.0,
) -> DistributedContext:
    """Join the process group torchrun set up, or describe a single process.

    Idempotent: a second call returns the same context (the device request must agree).

    Args:
        device_spec: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.  Under torchrun with CUDA,
            each process takes GPU ``LOCAL_RANK`` (``cuda:N`` is then not allowed, since
            ranks would share a GPU).
        backend: ``gloo`` / ``nccl``; default ``nccl`` on CUDA, ``gloo`` on CPU.
        timeout_s: how long a collective waits for the other ranks (seconds).

    Returns:
        The :class:`DistributedContext`; ``world_size == 1`` without torchrun.

    Raises:
        PplGenError: bad device request, or torchrun's variables are malformed.
    """
    global _CURRENT
    device = resolve_device(device_spec)
    if _CURRENT is not None and _CURRENT.distributed and torch_dist.is_initialized():
        if device.type != _CURRENT.device.type:
            raise PplGenError(
                f"--device {device_spec}: this job already runs on {_CURRENT.device.type}"
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
                f"--device {device_spec}: under torchrun use --device cuda (or auto); "
                "every process takes GPU LOCAL_RANK"
            )
        if local_rank >= torch.cuda.device_count():
            raise PplGenError(
                f"--device cuda: LOCAL_RANK {local_rank} but only "
                f"{torch.cuda.device_count()} CUDA device(s) on this node "
                "(use --nproc-per-node <= the number of GPUs)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
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
    "DistributedContext",
    "RankFailed",
    "current",
    "init_from_env",
    "launched_by_torchrun",
    "single_process",
    "teardown",
]
