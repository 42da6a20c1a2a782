"""Data-parallel training under ``torchrun`` (PyTorch DDP); a no-op for a single process."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from minivess.training.engine import Trainer
from minivess.training.events import Event


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a ``torchrun`` job.

    Args:
        rank: Global rank (0 for a single process).
        world_size: Number of processes.
        local_rank: Rank on this node; selects the CUDA device.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints, logs and progress."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process trains."""
        return self.world_size > 1


def init_distributed(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group ``torchrun`` set up (``WORLD_SIZE`` > 1), else stay single.

    Uses NCCL on CUDA (one GPU per local rank) and gloo on CPU.

    Returns:
        The context and the device this rank should use.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(), device
    ctx = DistContext(
        rank=int(os.environ["RANK"]),
        world_size=world_size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return ctx, device


def shutdown_distributed() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class SyncStop:
    """Stop every rank when any rank wants to stop (time limits differ slightly per rank).

    Attach it last, so it sees the decisions of every other end-of-epoch handler.
    """

    def attach(self, trainer: Trainer) -> None:
        """Agree at the end of every epoch."""
        trainer.on(Event.CHECKPOINT_DUE, self._agree)

    def _agree(self, trainer: Trainer) -> None:
        flag = torch.tensor([1.0 if trainer.state.should_stop else 0.0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0 and not trainer.state.should_stop:
            trainer.state.should_stop = True
            trainer.state.stop_reason = "other_rank"
