"""torchrun detection and the one place where DDP / FSDP2 are applied (models know nothing of it).

    torchrun --nproc_per_node 2 -m edlm.cli train ...     # or: torchrun ... $(which edlm) train ...
gloo on CPU, NCCL on CUDA. Sums are all-reduced and divided once by the global count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    group: bool = False
    """a process group is up (always under torchrun with N > 1; with N = 1 only when FSDP2 was asked for)"""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device, *, group: bool = False) -> Dist:
    """group=True: under torchrun with one process too (FSDP2 on one device: the same sharded code path, for
    measuring it and for checkpoints that must resume anywhere)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 and not (group and "RANK" in os.environ):
        return Dist(device=device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local, device, group=True)


def wrap_model(model: torch.nn.Module, d: Dist, mode: str = "ddp"):
    """Apply DDP (default) or FSDP2 (`fully_shard` on every block, then the root; with one process too when
    its group is up)."""
    if mode == "fsdp" and d.group:
        from torch.distributed.fsdp import fully_shard

        for blk in getattr(model, "blocks", []):
            fully_shard(blk)
        fully_shard(model)
        return model
    if not d.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)


def all_reduce_sum(x: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.enabled:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def barrier(d: Dist):
    if d.enabled:
        dist.barrier()


def cleanup(d: Dist):
    if d.group and dist.is_initialized():
        dist.destroy_process_group()
