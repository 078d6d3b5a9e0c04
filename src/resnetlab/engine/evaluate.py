"""Evaluate a model on a loader, or a finished run / checkpoint on one of its splits.

`evaluate()` is what the trainer calls at every validation interval; `evaluate_run()` is
`resnetlab evaluate RUN_DIR|CKPT` and writes eval_<split>.json, confusion_<split>.csv and the confusion plot.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.engine.config import Config, config_from_dict
from resnetlab.errors import UserError
from resnetlab.eval.metrics import Metrics

if TYPE_CHECKING:  # pragma: no cover
    from resnetlab.data import ImageSet
    from resnetlab.engine.builders import Datasets

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
    from resnetlab.engine.builders import build_data

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


def evaluate_run(
    path: Path | str, split: str = "test", tta: bool = False, data_dir: Path | str | None = None
) -> dict[str, Any]:
    """`resnetlab evaluate`: metrics of a run's best checkpoint (or any checkpoint) on one split.

    Writes eval_<split>.json, confusion_<split>.csv, plots/confusion_<split>.png and plots/wrong_<split>.png
    into the run directory (or next to a checkpoint outside a run directory).

    Args:
        path: RUN_DIR (its checkpoints/best.pt) or a checkpoint file.
        split: "test" (the official test split) or "val" (the run's seeded validation split).
        tta: average the prediction with the horizontally flipped image.
        data_dir: the folder holding the data set, if not where the run found it.

    Returns:
        `Metrics.compute()` with per-class rows, plus split, tta, checkpoint, step and files written.
    """
    from resnetlab.engine.builders import make_loader, select_device
    from resnetlab.engine.checkpoint import load_checkpoint

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
    result["files"] = _write_outputs(output_dir(ckpt), result, imageset.images, targets, scores)
    log.info("%s accuracy %.2f%% (%d images)", split, 100 * result["acc"], result["n"])
    return result


def _write_outputs(out: Path, result: dict[str, Any], images: torch.Tensor, targets: torch.Tensor,
                   scores: torch.Tensor) -> dict[str, str]:
    from resnetlab.eval import plots

    split, classes = result["split"], [row["class"] for row in result["per_class"]]
    files = {"metrics": out / f"eval_{split}.json", "confusion csv": out / f"confusion_{split}.csv"}
    _write_atomic(files["metrics"], json.dumps({k: v for k, v in result.items() if k != "files"}, indent=1) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true \\ predicted", *classes])
    writer.writerows([name, *row] for name, row in zip(classes, result["confusion_matrix"], strict=True))
    _write_atomic(files["confusion csv"], buffer.getvalue())
    title = f"{result['model']} on {plots.short_data_name(result['data'])} {split}"
    files["confusion plot"] = plots.plot_confusion(result["confusion_matrix"], classes,
                                                   out / "plots" / f"confusion_{split}.png", title=title)
    files["wrong predictions"] = plots.plot_wrong(images, targets, scores, classes,
                                                  out / "plots" / f"wrong_{split}.png")
    return {label: str(path) for label, path in files.items()}


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
