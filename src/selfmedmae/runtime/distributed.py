"""Distributed training the torchrun way: read RANK / LOCAL_RANK / WORLD_SIZE; without them, one process.

gloo on CPU, NCCL on GPU. Only rank 0 writes files; metrics are averaged across ranks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from selfmedmae.runtime.device import device_for


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


_users = 0  # nested setup() calls: the process group lives until the outermost cleanup()


def setup(device: str = "auto") -> Dist:
    """Join the torchrun process group (created on the first call; each call pairs with one cleanup()).

    A command that runs several stages (``selfmedmae reproduce``) calls it once around them all: a group
    destroyed and created again in one process can meet stale addresses in the torchrun store and hang."""
    global _users
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = device_for(device, local)
    if world > 1:
        if not dist.is_initialized():
            backend = "nccl" if dev.type == "cuda" else "gloo"
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            dist.init_process_group(backend=backend)
        _users += 1
    return Dist(rank, local, world, dev)


def cleanup() -> None:
    global _users
    _users = max(0, _users - 1)
    if _users == 0 and dist.is_initialized():
        dist.destroy_process_group()


def mean_across(values: dict[str, float], ctx: Dist) -> dict[str, float]:
    """Average scalar metrics over the ranks (identity in one process)."""
    if not ctx.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                     device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return {k: v / ctx.world_size for k, v in zip(keys, t.tolist())}


def barrier(ctx: Dist) -> None:
    if ctx.enabled:
        dist.barrier()


def broadcast_flag(flag: bool, ctx: Dist) -> bool:
    """True on every rank when any rank says True (e.g. a non-finite loss)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return bool(t.item() > 0)


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer, in key order: equal digests mean bit-identical weights."""
    import hashlib

    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        flat = value.detach().cpu().reshape(-1)  # logical order, whatever the memory format (channels-last)
        h.update(flat.contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def digests_across(model: torch.nn.Module, ctx: Dist) -> list[str]:
    """Every rank's weights digest (one in a single process): DDP replicas must never drift apart."""
    digest = weights_digest(model)
    if not ctx.enabled:
        return [digest]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, digest)
    return out
