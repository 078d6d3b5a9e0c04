"""Evaluate a model on a loader, or a finished run / checkpoint on one of its splits.

`evaluate()` is what the trainer calls at every validation interval; `evaluate_run()` is
`resnetlab evaluate RUN_DIR|CKPT` and writes eval_<split>.json, confusion_<split>.csv and the confusion plot.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.data import ImageSet
from resnetlab.engine.builders import Datasets, build_data, make_loader, select_device
from resnetlab.engine.checkpoint import load_checkpoint
from resnetlab.engine.config import Config, config_from_dict
from resnetlab.engine.metrics import Metrics
from resnetlab.engine.rundir import write_evaluation
from resnetlab.errors import UserError

log = logging.getLogger(__name__)

SPLITS = ("test", "val")

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


# ------------------------------------------------------------------------------------------- evaluate_run


def checkpoint_path(path: Path | str) -> Path:
    """RUN_DIR -> RUN_DIR/checkpoints/best.pt; a file stays itself."""
    path = Path(path)
    if path.is_dir():
        best = path / "checkpoints" / "best.pt"
        if not best.is_file():
            raise UserError(f"{path} has no checkpoints/best.pt; pass the --out of 'resnetlab train' or a .pt file")
        return best
    if not path.exists():
        raise UserError(f"{path} does not exist; pass a run directory or a checkpoint file")
    return path


def output_dir(ckpt: Path) -> Path:
    """Where the files of an evaluation go: the run directory of RUN_DIR/checkpoints/x.pt, else the file's folder."""
    ckpt = ckpt.resolve()
    if ckpt.parent.name == "checkpoints" and (ckpt.parent.parent / "config.yaml").is_file():
        return ckpt.parent.parent
    return ckpt.parent


def load_split(
    info: dict[str, Any], split: str, data_dir: Path | str | None = None
) -> tuple[ImageSet, Datasets, Config]:
    """The checkpoint's data split (as its run built it) with the run's config; checks the class count.

    Returns:
        (imageset of the split, Datasets, config).
    """

    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    cfg = config_from_dict(info["config"])
    if data_dir is not None:
        cfg.data.root = str(data_dir)
    data = build_data(cfg)
    if len(data.classes) != info["num_classes"]:
        raise UserError(f"the checkpoint has {info['num_classes']} classes but {cfg.data.name} has "
                        f"{len(data.classes)}; evaluate it on the data set it was trained on")
    if list(data.classes) != list(info["classes"]):
        log.warning("the data set's class names differ from the checkpoint's; the checkpoint's names are reported")
    imageset = data.test if split == "test" else data.val
    if imageset is None:
        raise UserError("this run has no validation split (data.val_size=0); use --split test")
    return imageset, data, cfg


@dataclass
class Scored:
    """What scoring a checkpoint on a split gives: the metrics, and what the plots of it need."""

    result: dict[str, Any]  # Metrics.compute() with per-class rows, plus split, tta, checkpoint, files, ...
    images: torch.Tensor  # uint8 (N, C, H, W), the split as stored
    targets: torch.Tensor  # (N,) int64
    scores: torch.Tensor  # (N, K) logits (log-probabilities with tta)
    out_dir: Path  # where the evaluation's files went


def score_run(
    path: Path | str, split: str = "test", tta: bool = False, data_dir: Path | str | None = None
) -> Scored:
    """Metrics of a run's best checkpoint (or any checkpoint) on one split; writes eval_<split>.json and
    confusion_<split>.csv into the run directory (or next to a checkpoint outside a run directory).

    Args:
        path: RUN_DIR (its checkpoints/best.pt) or a checkpoint file.
        split: "test" (the official test split) or "val" (the run's seeded validation split).
        tta: average the prediction with the horizontally flipped image.
        data_dir: the folder holding the data set, if not where the run found it.
    """

    ckpt = checkpoint_path(path)
    model, info = load_checkpoint(ckpt)
    imageset, data, cfg = load_split(info, split, data_dir)
    device = select_device("auto")
    loader = make_loader(imageset, cfg, train=False, device=device, normalization=info["normalization"])
    scores, targets = predict_batches(model.to(device), loader, tta=tta)
    metrics = Metrics(info["num_classes"], per_class=True, classes=info["classes"])
    metrics.update(scores, targets, F.cross_entropy(scores, targets))
    result = metrics.compute()
    result.update(split=split, tta=tta, checkpoint=str(ckpt.resolve()), step=info.get("step"),
                  model=cfg.model.name, data=cfg.data.name)
    out = output_dir(ckpt)
    result["files"] = write_evaluation(out, split, result)
    log.info("%s accuracy %.2f%% (%d images)", split, 100 * result["acc"], result["n"])
    return Scored(result, imageset.images, targets, scores, out)
