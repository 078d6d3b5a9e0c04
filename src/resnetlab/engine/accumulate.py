"""Gradient accumulation (train.accumulate): one optimizer step from the summed gradients of K micro-batches.

The loader still yields batches of data.batch_size (so the data order and augmentation do not change); each batch
is cut into K micro-batches whose losses are weighted by their share of the batch, so the summed gradient is the
gradient of the whole batch's mean loss. With BatchNorm frozen (train.freeze_bn) that is the large batch's step to
rounding; in training mode BatchNorm normalizes each micro-batch with its own statistics, as it would on a device
that fits only the micro-batch. Under DDP the gradients are all-reduced once per step, on the last micro-batch
(`DistributedDataParallel.no_sync` for the others).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def micro_batches(x: torch.Tensor, y: torch.Tensor, k: int) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """The batch (x, y) as up to `k` consecutive micro-batches (x_i, y_i, share of the batch), none empty.

    Sizes differ by at most one image (an incomplete last batch need not divide by k).
    """
    if k <= 1:
        return [(x, y, 1.0)]
    n = x.shape[0]
    return [(xs, ys, xs.shape[0] / n) for xs, ys in zip(x.tensor_split(k), y.tensor_split(k), strict=True)
            if xs.shape[0]]


@contextlib.contextmanager
def gradient_sync(model: nn.Module, sync: bool) -> Iterator[None]:
    """Within it, a DDP model's backward all-reduces the gradients only when `sync` (the last micro-batch)."""
    ddp = model if isinstance(model, DistributedDataParallel) else getattr(model, "_orig_mod", None)
    if sync or not isinstance(ddp, DistributedDataParallel):
        yield
        return
    with ddp.no_sync():
        yield
