"""Evaluate a model on a loader: the loop the trainer runs at every validation interval and for the final test.

`evaluate_model()` gives the metrics, `predict_batches()` every score in loader order, `forward_scores()` one
batch's (with test-time augmentation, `tta_views`). The public evaluation of a finished run or checkpoint
(`resnetlab.evaluate`) is `resnetlab.inference.evaluate`, built on these.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from resnetlab.engine.metrics import Metrics

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _autocast(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


TTA_MODES = ("flip", "shift")


def tta_views(x: torch.Tensor, tta: bool | str) -> list[torch.Tensor]:
    """The views of a normalized batch (B, C, H, W) that test-time augmentation averages over.

    flip (or True): the image and its left-right mirror. shift: those two, each also moved one pixel up-left and
    one pixel down-right (zero-filled, i.e. the mean), six views as airbench's multi-view TTA (Jordan 2024).
    """
    if not tta:
        return [x]
    views = [x, torch.flip(x, dims=[3])]
    if tta == "shift":
        h, w = x.shape[-2:]
        for view in views[:2]:
            padded = F.pad(view, (1, 1, 1, 1))
            views += [padded[..., :h, :w], padded[..., 2:, 2:]]
    return views


def forward_scores(model: nn.Module, x: torch.Tensor, tta: bool | str = False) -> torch.Tensor:
    """Logits of a batch; with `tta`, the log of the mean softmax over its views (`tta_views`).

    The log of the averaged probabilities is returned so that cross-entropy on it is the loss of the averaged
    prediction and argmax / top-k are those of the averaged probabilities.

    Args:
        model: the network (already in eval mode).
        x: (B, C, H, W) normalized batch.
        tta: False, "flip" (or True) or "shift" (see `tta_views`).
    """
    if not tta:
        return model(x).float()  # (B, K)
    views = tta_views(x, tta)
    probs = sum(model(view).float().softmax(dim=1) for view in views) / len(views)
    return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


def evaluate_model(
    model: nn.Module,
    loader: Batches,
    *,
    num_classes: int,
    per_class: bool = False,
    tta: bool = False,
    amp_dtype: torch.dtype | None = None,
    classes: Sequence[str] | None = None,
    progress: bool = False,
    what: str = "evaluation",
) -> dict[str, Any]:
    """Loss, top-1/top-5 accuracy (and per-class metrics) of `model` over every batch of `loader`.

    The model runs in eval mode under `torch.inference_mode` (and autocast when `amp_dtype` is set); its
    previous train/eval mode is restored afterwards.

    Args:
        model: the network; batches are expected on its device (the Loader puts them there).
        loader: yields (x normalized float, y int64) batches.
        num_classes: K.
        per_class: also compute the per-class table and confusion matrix.
        tta: test-time augmentation: False, "flip" (or True) or "shift" (see `tta_views`).
        amp_dtype: e.g. torch.bfloat16 for mixed precision; None = full precision.
        classes: class names for the per-class rows.
        progress: show a progress bar (named `what`) once the evaluation has taken more than 2 seconds.

    Returns:
        `Metrics.compute()`: loss, acc, acc5, n (+ per_class, macro, weighted, confusion_matrix).
    """
    device = _model_device(model)
    metrics = Metrics(num_classes, device=device, per_class=per_class, classes=classes)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _autocast(device, amp_dtype):
            for x, y in _maybe_bar(loader, progress, what):
                scores = forward_scores(model, x, tta)
                metrics.update(scores, y, F.cross_entropy(scores, y))
    finally:
        model.train(was_training)
    return metrics.compute()


def _maybe_bar(loader: Batches, progress: bool, what: str) -> Batches:
    if not progress:
        return loader
    total = len(loader) if hasattr(loader, "__len__") else None
    return tqdm(loader, total=total, desc=what, unit="batch", leave=False, delay=2.0, dynamic_ncols=True)


def predict_batches(
    model: nn.Module, loader: Batches, *, tta: bool = False, amp_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All scores and targets of an (unshuffled) loader, on the CPU, in loader order.

    Returns:
        (scores (N, K) float32, targets (N,) int64); scores are logits, or log-probabilities with `tta`.
    """
    device = _model_device(model)
    scores, targets = [], []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _autocast(device, amp_dtype):
            for x, y in _maybe_bar(loader, progress, "evaluation"):
                scores.append(forward_scores(model, x, tta).cpu())
                targets.append(y.cpu())
    finally:
        model.train(was_training)
    if not scores:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(scores), torch.cat(targets)
