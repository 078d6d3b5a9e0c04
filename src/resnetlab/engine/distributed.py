"""Several processes under torchrun: the process group, who does I/O, and agreement across ranks.

A single process (no torchrun variables) is world size 1 with no process group, and every helper here
is then a no-op, so the trainer has one code path. Under torchrun, rank 0 alone writes files, logs and
shows the progress bar; every collective has the configured timeout, so a dead rank ends the job with an
error instead of a hang.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from resnetlab.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job (torchrun's RANK, WORLD_SIZE, LOCAL_RANK)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process does the I/O (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether there is more than one process."""
        return self.world_size > 1

    @classmethod
    def from_environ(cls) -> DistEnv:
        """Read torchrun's variables; a single process when they are absent."""
        try:
            world_size = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise UserError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (start with torchrun)") from None
        return cls(rank=rank, world_size=world_size, local_rank=local_rank)


def init_distributed(env: DistEnv, device: torch.device, timeout_s: int) -> None:
    """Join the process group (NCCL on CUDA, gloo otherwise) unless this is a single process."""
    if not env.distributed or (dist.is_available() and dist.is_initialized()):
        return
    if not dist.is_available():
        raise UserError("this PyTorch build has no torch.distributed; run a single process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s),
                            rank=env.rank, world_size=env.world_size)
    if env.is_main:
        log.info("process group: %s, %d processes", backend, env.world_size)


def destroy_distributed() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any rank (e.g. a stop request or a NaN loss)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_object(obj: object, src: int = 0) -> object:
    """`obj` from rank `src` on every rank (e.g. a decision only rank 0 can take)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
