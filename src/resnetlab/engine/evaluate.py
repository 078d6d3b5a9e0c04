"""Evaluate a model on a loader, or a finished run / checkpoint on one of its splits.

`evaluate()` is what the trainer calls at every validation interval; `evaluate_run()` is
`resnetlab evaluate RUN_DIR|CKPT` and writes eval_<split>.json, confusion_<split>.csv and the confusion plot.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.eval.metrics import Metrics

log = logging.getLogger(__name__)

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _autocast(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def forward_scores(model: nn.Module, x: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Logits of a batch; with `tta`, log of the mean softmax of the image and its horizontal flip.

    The log of the averaged probabilities is returned so that cross-entropy on it is the loss of the averaged
    prediction and argmax / top-k are those of the averaged probabilities.

    Args:
        model: the network (already in eval mode).
        x: (B, C, H, W) normalized batch.
        tta: average with the prediction for `torch.flip(x, dims=[3])` (left-right mirror).
    """
    logits = model(x).float()  # (B, K)
    if not tta:
        return logits
    flipped = model(torch.flip(x, dims=[3])).float()
    probs = (logits.softmax(dim=1) + flipped.softmax(dim=1)) / 2
    return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


def evaluate(
    model: nn.Module,
    loader: Batches,
    *,
    num_classes: int,
    per_class: bool = False,
    tta: bool = False,
    amp_dtype: torch.dtype | None = None,
    classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Loss, top-1/top-5 accuracy (and per-class metrics) of `model` over every batch of `loader`.

    The model runs in eval mode under `torch.inference_mode` (and autocast when `amp_dtype` is set); its
    previous train/eval mode is restored afterwards.

    Args:
        model: the network; batches are expected on its device (the Loader puts them there).
        loader: yields (x normalized float, y int64) batches.
        num_classes: K.
        per_class: also compute the per-class table and confusion matrix.
        tta: test-time augmentation with the horizontal flip (see `forward_scores`).
        amp_dtype: e.g. torch.bfloat16 for mixed precision; None = full precision.
        classes: class names for the per-class rows.

    Returns:
        `Metrics.compute()`: loss, acc, acc5, n (+ per_class, macro, weighted, confusion_matrix).
    """
    device = _model_device(model)
    metrics = Metrics(num_classes, device=device, per_class=per_class, classes=classes)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _autocast(device, amp_dtype):
            for x, y in loader:
                scores = forward_scores(model, x, tta)
                metrics.update(scores, y, F.cross_entropy(scores, y))
    finally:
        model.train(was_training)
    return metrics.compute()


def predict_batches(
    model: nn.Module, loader: Batches, *, tta: bool = False, amp_dtype: torch.dtype | None = None
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
            for x, y in loader:
                scores.append(forward_scores(model, x, tta).cpu())
                targets.append(y.cpu())
    finally:
        model.train(was_training)
    if not scores:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(scores), torch.cat(targets)
