"""Checkpoint helpers of the CycleGAN task: several components stored as one entry
(``nets``, ``opts``, ``scheds``, ``pools``) and every rank's image pools under data
parallelism (``pools_ranks``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ppl_gen.core.distributed import DistributedContext
from ppl_gen.gan.image_pool import ImagePool


class ComponentGroup:
    """Several named components stored as one checkpoint entry ``{name: state_dict}``."""

    def __init__(self, members: Mapping[str, Any]) -> None:
        self.members = dict(members)

    def state_dict(self) -> dict[str, Any]:
        return {k: v.state_dict() for k, v in self.members.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = sorted(set(self.members) - set(state))
        if missing:
            raise KeyError(f"missing {missing}")
        for k, v in self.members.items():
            v.load_state_dict(state[k])


class RankPools:
    """Every rank's image pools (data parallelism): :meth:`gather` collects them on every
    rank at the end of an epoch (a collective), :meth:`state_dict` is that list (empty in
    one process), :meth:`load_state_dict` gives each rank its own pools back, or -- saved
    by another number of processes -- keeps rank 0's (restored from ``pools``) and empties
    the others."""

    def __init__(
        self, pools: dict[str, ImagePool], seeds: dict[str, int], ctx: DistributedContext
    ) -> None:
        self.pools, self.seeds, self.ctx = pools, seeds, ctx
        self.gathered: list = []

    def gather(self) -> None:
        if self.ctx.distributed:
            own = {k: v.state_dict() for k, v in self.pools.items()}
            self.gathered = self.ctx.all_gather_object(own)

    def state_dict(self) -> list:
        return self.gathered

    def load_state_dict(self, ranks: list) -> None:
        ctx = self.ctx
        if len(ranks or []) == ctx.world_size and ctx.distributed:
            for k, pool in self.pools.items():
                pool.load_state_dict(ranks[ctx.rank][k])
        elif max(len(ranks or []), 1) != ctx.world_size and not ctx.is_main:
            for k, pool in self.pools.items():
                pool.reset(self.seeds[k])
