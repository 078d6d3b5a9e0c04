"""Several processes under torchrun: the process group, who does I/O, and agreement across ranks.

A single process (no torchrun variables) is world size 1 with no process group, and every helper here
is then a no-op, so the trainer has one code path. Under torchrun, rank 0 alone writes files, logs and
shows the progress bar.

When a process dies or hangs, the job stops instead of hanging forever:

- a rank that dies (crash, SIGKILL, out of memory) closes its connections: the other ranks' next collective
  fails at once, and torchrun, which watches its workers, sends the rest SIGTERM and exits non-zero;
- a rank that hangs (or a node that vanishes without closing its sockets) makes the others wait in a
  collective for at most `dist.timeout_s` seconds (the process group's timeout; on CUDA, NCCL's watchdog
  ends the process after it); torchrun then stops the remaining workers (SIGTERM, SIGKILL 30 s later).

Each surviving rank says what happened in one log line (`collective_failures`), and the same command with
`--resume` continues from checkpoints/last.pt, with any number of processes (see `check_resume_world_size`).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from resnetlab.engine.rundir import CHECKPOINTS, LAST
from resnetlab.errors import TrainingFailed, UserError

log = logging.getLogger(__name__)

# Words (lowercase) in the RuntimeErrors that gloo and NCCL raise when a peer is gone or a collective timed out
# (NCCL and the store raise torch.distributed.DistError subclasses too; gloo raises plain RuntimeErrors, e.g.
# "Timed out waiting 5000ms for recv operation", "Application timeout caused pair closure", "Connection reset").
_COLLECTIVE_FAILURE_MARKERS = ("gloo", "nccl", "connection reset", "connection closed", "broken pipe", "timed out",
                               "timeout caused")


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


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def init_distributed(env: DistEnv, device: torch.device, timeout_s: int) -> None:
    """Join the process group (NCCL on CUDA, gloo otherwise) unless this is a single process.

    Args:
        env: this process's rank and the world size (`DistEnv.from_environ`).
        device: this process's device (`devices.select_device(..., env.local_rank)`).
        timeout_s: how long any collective may wait for the other ranks before it fails (`dist.timeout_s`).
    """
    if not env.distributed or _initialized():
        return
    if not dist.is_available():
        raise UserError("this PyTorch build has no torch.distributed; run a single process")
    if device.type == "mps":
        raise UserError("several processes cannot share the MPS backend (no collectives for it); use --device cpu")
    options: dict[str, object] = {}
    if device.type == "cuda":
        # Every rank must talk through its own GPU: without this, NCCL and barriers use cuda:0 on every rank.
        torch.cuda.set_device(device)
        options["device_id"] = device
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s),
                            rank=env.rank, world_size=env.world_size, **options)
    if env.is_main:
        log.info("process group: %s, %d processes, collectives time out after %d s (dist.timeout_s)",
                 backend, env.world_size, timeout_s)


def destroy_distributed() -> None:
    """Leave the process group if this process joined one."""
    if _initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if _initialized():
        dist.barrier()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any rank (e.g. a stop request or a NaN loss)."""
    if not _initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_object(obj: object, src: int = 0) -> object:
    """`obj` from rank `src` on every rank (e.g. a decision only rank 0 can take)."""
    if not _initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(state: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The element-wise sum over all ranks of each tensor in `state`, on the CPU (unchanged in one process).

    Used for running sums that each rank holds for its own share of the data (e.g. the partial train metrics
    a checkpoint stores: rank 0 alone writes it, so it must hold everyone's counts).

    Args:
        state: CPU tensors, the same keys and shapes on every rank.
        device: this rank's device (NCCL reduces CUDA tensors only).
    """
    if not _initialized():
        return state
    reduced = {}
    for key, value in state.items():
        buffer = value.to(device, copy=True)
        dist.all_reduce(buffer)
        reduced[key] = buffer.cpu()
    return reduced


def convert_sync_batchnorm(net: nn.Module, env: DistEnv, device: torch.device, enabled: bool) -> nn.Module:
    """`net` with SyncBatchNorm layers (batch statistics over all ranks) when `enabled` under torchrun.

    In a single process there is nothing to synchronize and `net` is returned as it is. PyTorch's
    SyncBatchNorm runs on accelerators only, so on any other device this is refused.

    Raises:
        UserError: `enabled` with several processes on a device other than CUDA.
    """
    if not (enabled and env.distributed):
        return net
    if device.type != "cuda":
        raise UserError(f"dist.sync_bn=true needs CUDA GPUs (PyTorch's SyncBatchNorm does not run on {device.type}); "
                        "set dist.sync_bn=false (or train.freeze_bn=true to keep BatchNorm statistics fixed)")
    return nn.SyncBatchNorm.convert_sync_batchnorm(net)


def check_resume_world_size(saved_world_size: int, env: DistEnv, batch_size_mode: str) -> None:
    """Refuse to resume on another number of processes when that would change the global batch.

    With dist.batch_size=global (the default) a checkpoint is independent of the world size: the loader's
    position counts global batches and the augmentation is drawn per global sample. With per_device the
    global batch is data.batch_size x processes, so the position would point into different batches.
    """
    if batch_size_mode == "per_device" and saved_world_size != env.world_size:
        raise UserError(f"this run used {saved_world_size} process(es) with dist.batch_size=per_device, so its global "
                        f"batch depends on the number of processes; resume it with {saved_world_size} "
                        f"(torchrun --nproc-per-node ...), not {env.world_size}")


@contextlib.contextmanager
def in_turn(env: DistEnv, enabled: bool = True) -> Iterator[None]:
    """Run the body on rank 0 first, then on every other node's local rank 0, then on all remaining ranks.

    For work that must not run concurrently on one folder, such as downloading a data set: the first
    process downloads into a shared folder, the first process of each node into a per-node folder, and
    everyone else finds the files there. Every rank runs the body exactly once.
    """
    if not (enabled and _initialized()):
        yield
        return
    turn = 0 if env.is_main else 1 if env.local_rank == 0 else 2
    for _ in range(turn):
        dist.barrier()
    try:
        yield
    finally:
        for _ in range(turn, 3):
            dist.barrier()


def is_collective_failure(exc: BaseException) -> bool:
    """Whether `exc` says that another rank is gone or a collective timed out (not a bug of this rank)."""
    if isinstance(exc, TrainingFailed):
        return False
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(marker in text for marker in _COLLECTIVE_FAILURE_MARKERS)


def _failure_reason(exc: BaseException) -> str:
    """The informative part of a gloo/NCCL error: its first line without the source location and the advice."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text).split(". This is typically")[0]
    return text[:200]


@contextlib.contextmanager
def collective_failures(env: DistEnv, timeout_s: int) -> Iterator[None]:
    """Turn a failed collective (a rank died, hung past the timeout, or the network broke) into TrainingFailed.

    The reason is logged at once, while this process is still handling SIGTERM itself (torchrun sends it to
    the surviving workers as soon as one of them dies), so the message is out before the job is torn down.

    Raises:
        TrainingFailed: with one line that says how to continue (`--resume`).
    """
    try:
        yield
    except Exception as exc:
        if not (env.distributed and is_collective_failure(exc)):
            raise
        log.error("rank %d: a collective operation failed (%s): another process died, hung for more than "
                  "dist.timeout_s=%d s, or the network between them failed", env.rank, _failure_reason(exc), timeout_s)
        raise TrainingFailed(f"rank {env.rank} lost contact with the other processes, so the job stops; fix the cause, "
                             f"then run the same command with --resume to continue from {CHECKPOINTS}/{LAST}") from exc
