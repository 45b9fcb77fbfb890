"""Data parallelism: process group set-up, positives gathered across ranks, gradient averaging.

Every rank embeds its shard of the global batch; the MMR softmax of a query
spans the positives of *all* ranks (``offset`` = where the local queries'
positives start). :func:`gather_with_grad` concatenates the shards; in the
backward pass the gradient of the concatenation is summed over ranks and
each rank keeps the rows of its own shard, so a positive receives the
gradient of every rank's loss, exactly as in one process on the whole batch.

With each rank's loss scaled by ``world_size * local_batch / global_batch``
(1 for equal shards) and parameter gradients averaged
(:func:`all_reduce_gradients`), a data-parallel step equals the one-process
step on the concatenated batch (``tests/training/test_distributed.py``).

Without a process group every function is the identity, so the trainer runs
the same code in one process.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistributedContext",
    "init_distributed",
    "gather_with_grad",
    "all_reduce_gradients",
    "all_reduce_sum",
    "barrier",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits: ``rank`` of ``world_size``, its ``device``, and the strategy."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    strategy: str = "single"

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and logs."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether a process group with more than one rank is active."""
        return self.world_size > 1


def init_distributed(strategy: str = "auto") -> DistributedContext:
    """Join the process group that ``torchrun`` describes (``RANK``, ``WORLD_SIZE``...).

    ``strategy="auto"`` is ``"ddp"`` under torchrun with several processes,
    else ``"single"``. The backend is NCCL on CUDA, gloo on CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if strategy == "auto":
        strategy = "ddp" if world_size > 1 else "single"
    if strategy == "single" and world_size > 1:
        raise ValueError(f"strategy 'single' but WORLD_SIZE={world_size}; use 'ddp' or 'fsdp2'")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = (
        torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    )
    if strategy == "single":
        return DistributedContext(device=device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    context = DistributedContext(
        dist.get_rank(), dist.get_world_size(), local_rank, device, strategy
    )
    logger.info("rank %d of %d on %s (%s)", context.rank, context.world_size, device, strategy)
    return context


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather of row blocks of any sizes; backward sums over ranks and keeps the local rows."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:  # type: ignore[override]
        largest = max(sizes)
        padded = local.new_zeros((largest, *local.shape[1:]))  # (max_rows, ...)
        padded[: local.shape[0]] = local
        blocks = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(blocks, padded.contiguous())
        ctx.sizes, ctx.rank = sizes, rank
        return torch.cat(
            [block[:size] for block, size in zip(blocks, sizes, strict=True)]
        )  # (sum(sizes), ...)

    @staticmethod
    def backward(ctx, grad_gathered: torch.Tensor):  # type: ignore[override]
        grad = grad_gathered.contiguous().clone()  # (sum(sizes), ...)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None


def gather_with_grad(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate every rank's ``local`` rows; return it and this rank's first row.

    Parameters
    ----------
    local : torch.Tensor, shape (b_rank, ...)
        This rank's rows (ranks may hold different numbers of rows).

    Returns
    -------
    gathered : torch.Tensor, shape (sum of b_rank, ...)
        Rank 0's rows first. Gradients flow back to each rank's own rows,
        summed over the losses of all ranks.
    offset : int
        Index of this rank's first row in ``gathered``.
    """
    if not _active():
        return local, 0
    count = torch.tensor([local.shape[0]], device=local.device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    rank = dist.get_rank()
    gathered = _GatherWithGrad.apply(local, sizes, rank)
    return gathered, sum(sizes[:rank])


def all_reduce_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients of ``parameters`` over ranks, flattened into one buffer."""
    if not _active():
        return
    with_grad = [p for p in parameters if p.grad is not None]
    if not with_grad:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in with_grad])  # (total,)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    position = 0
    for parameter in with_grad:
        size = parameter.grad.numel()
        parameter.grad.copy_(flat[position : position + size].view_as(parameter.grad))
        position += size


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (a copy; identity in one process)."""
    values = values.detach().clone()
    if _active():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if _active():
        dist.barrier()
