"""Data-parallel training over processes started by ``torchrun`` (gloo on CPU, NCCL on GPU).

The learning step calls the model many times per update (K0 + K1 Langevin steps), which
``DistributedDataParallel``'s once-per-backward bucketing does not fit, so gradients are
averaged explicitly: one all-reduce per module after the backward pass, the same arithmetic as
DDP. Parameters start equal on every rank (broadcast from rank 0); each rank reads a disjoint
share of the batches; logged metrics are averaged over ranks; rank 0 alone writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size``, on ``local_rank``'s device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(use_cuda: bool) -> DistContext:
    """Join the process group if started by ``torchrun`` (``WORLD_SIZE`` > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_parameters(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not ctx.enabled:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def average_gradients(modules: list[nn.Module], ctx: DistContext) -> None:
    """Average ``.grad`` over ranks: one flattened all-reduce per module."""
    if not ctx.enabled:
        return
    for module in modules:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if not grads:
            continue
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= ctx.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def reduce_values(
    values: dict[str, float], ctx: DistContext, average: bool = True
) -> dict[str, float]:
    """Sum (or average) named scalars over ranks; every rank gets the result."""
    if not ctx.enabled or not values:
        return values
    keys = sorted(values)
    reduced = _all_reduce([values[k] for k in keys], dist.ReduceOp.SUM)
    if average:
        reduced = [v / ctx.world_size for v in reduced]
    return dict(zip(keys, reduced, strict=True))


def _all_reduce(values: list[float], op: dist.ReduceOp) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=op)
    return [float(v) for v in tensor.cpu().tolist()]


def max_over_ranks(value: int, ctx: DistContext) -> int:
    """The largest of every rank's ``value``, on every rank (e.g. a stop signal that one rank
    received: every rank then stops at the same step, as the collectives require)."""
    if not ctx.enabled:
        return value
    return round(_all_reduce([float(value)], dist.ReduceOp.MAX)[0])


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()
