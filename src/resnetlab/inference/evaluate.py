"""The public evaluation of a finished run or checkpoint: `resnetlab.evaluate(RUN_DIR or CKPT)` and `score`.

It needs nothing but the run: the data set, its preparation and the normalization come from the checkpoint. It
writes eval_<tag>.json and confusion_<tag>.csv beside the run (`resnetlab evaluate` adds the plots, in
reports/evaluation.py). The loop itself is the trainer's (`engine.evaluate.predict_batches`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from resnetlab.data import ImageSet, load_dataset
from resnetlab.engine.builders import build_data, load_split, load_test, make_loader
from resnetlab.engine.config import Config, config_from_dict
from resnetlab.engine.devices import select_device
from resnetlab.engine.evaluate import TTA_MODES, predict_batches
from resnetlab.engine.metrics import Metrics
from resnetlab.engine.rundir import checkpoint_file, evaluation_tag, is_finished, write_evaluation
from resnetlab.engine.runlog import interactive_stderr
from resnetlab.errors import UserError
from resnetlab.inference.evalrecord import checkpoint_record
from resnetlab.inference.loading import load_with_digest, output_dir

log = logging.getLogger(__name__)

SPLITS = ("test", "val", "train")


def labelled_split(info: dict[str, Any], split: str, data: str | None = None,
                   data_dir: Path | str | None = None) -> tuple[ImageSet, Config]:
    """The labelled images to score a checkpoint on, prepared as its run prepared them (size, channels).

    Args:
        info: `load_checkpoint()`'s info.
        split: "test", "val" (the run's own seeded validation split; only for the run's data set) or "train" (the
            images the run trained on: the train split less the validation split, `data.train_size` of it).
        data: another labelled data set (a name or imagefolder:PATH) with the checkpoint's classes; its `split`
            is used (an image folder without split folders: all its images).
        data_dir: where the data set lies, if not where the run found it.

    Returns:
        (the split, the run's config with `data`/`data_dir` applied).
    """
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    cfg = config_from_dict(info["config"])
    if data_dir is not None:
        cfg.data.root = str(data_dir)
    if data is not None and data != cfg.data.name:
        if split != "test":
            raise UserError(f"--split {split} is the run's own {split} split; with --data use --split test")
        cfg.data.name = data
        imageset = _other_data(cfg)
    elif split == "test":
        imageset = load_test(cfg.data)  # the test split alone (data.test_size of it): no training images to load
    elif split == "train":  # a full pass in eval mode: the training error and loss of the model as it is
        imageset = build_data(cfg, with_test=False).train
    else:
        imageset = build_data(cfg, with_test=False).val
        if imageset is None:
            raise UserError("this run has no validation split (data.val_size=0); use --split test")
    _check_classes(imageset.classes, info, cfg.data.name)
    return imageset, cfg


def _other_data(cfg: Config) -> ImageSet:
    d = cfg.data
    try:
        return load_split(d, "test")
    except UserError:
        if not d.name.lower().startswith("imagefolder:"):
            raise
    # An image folder with one folder per class and no split folders: score all of it.
    return load_dataset(d.name, root=d.root, split="train", image_size=d.image_size, channels=d.channels)


def _check_classes(classes: Sequence[str], info: dict[str, Any], name: str) -> None:
    if len(classes) != info["num_classes"]:
        raise UserError(f"the checkpoint has {info['num_classes']} classes but {name} has {len(classes)}; "
                        "evaluate it on data with the same classes")
    if list(classes) != list(info["classes"]):
        log.warning("the data set's class names differ from the checkpoint's; the checkpoint's names are reported")


@dataclass
class Scored:
    """What scoring a checkpoint on a split gives: the metrics, and what the plots of it need."""

    result: dict[str, Any]  # Metrics.compute() with per-class rows, plus split, tta, checkpoint, files, ...
    images: torch.Tensor  # uint8 (N, C, H, W), the split as stored
    targets: torch.Tensor  # (N,) int64
    scores: torch.Tensor  # (N, K) logits (log-probabilities with tta)
    out_dir: Path  # where the evaluation's files went
    tag: str  # eval_<tag>.json: the split, the data set when another one, and _tta


def score(checkpoint_or_run: Path | str, split: str = "test", data: str | None = None, tta: bool | str = False, *,
          data_dir: Path | str | None = None, device: str = "auto", batch_size: int | None = None) -> Scored:
    """Score a run's best checkpoint (or any checkpoint) on a labelled split and write eval_<tag>.json and
    confusion_<tag>.csv into the run directory (or beside a checkpoint outside one). See `evaluate`."""
    if tta not in (False, True, *TTA_MODES):  # the settings first, before anything is read
        raise UserError(f"unknown test-time augmentation {tta!r}; use flip or shift")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be at least 1; got {batch_size}")
    ckpt = checkpoint_file(checkpoint_or_run)
    model, info, digest = load_with_digest(ckpt)
    _say_if_unfinished(checkpoint_or_run, info)
    imageset, cfg = labelled_split(info, split, data, data_dir)
    if batch_size is not None:
        cfg.eval.batch_size = batch_size
    target = select_device(device)
    loader = make_loader(imageset, cfg, train=False, device=target, normalization=info["normalization"])
    scores, targets = predict_batches(model.to(target), loader, tta=tta, progress=interactive_stderr())
    metrics = Metrics(info["num_classes"], per_class=True, classes=info["classes"])
    metrics.update(scores, targets, F.cross_entropy(scores, targets))
    result = metrics.compute()
    other = data if data is not None and data != config_from_dict(info["config"]).data.name else None
    tag = evaluation_tag(split, tta=tta, data=other)
    result.update(split=split, tta=tta, **checkpoint_record(ckpt, info.get("step"), digest), model=cfg.model.name,
                  data=cfg.data.name, device=str(target))
    out = output_dir(ckpt)
    result["files"] = write_evaluation(out, tag, result)
    log.info("%s accuracy %.2f%% (%d images%s)", split, 100 * result["acc"], result["n"],
             f", test-time augmentation: {tta_name(tta)}" if tta else "")
    return Scored(result, imageset.images, targets, scores, out, tag)


def _say_if_unfinished(checkpoint_or_run: Path | str, info: dict[str, Any]) -> None:
    """A run directory without summary.json is still training (or stopped): its best checkpoint is the best so
    far."""
    run_dir = Path(checkpoint_or_run).expanduser()
    if run_dir.is_dir() and not is_finished(run_dir):
        log.warning("%s has not finished (no summary.json): scoring its best checkpoint so far, from step %s",
                    run_dir, info.get("step", "?"))


def tta_name(tta: bool | str) -> str:
    """"flip" for True, else the mode itself."""
    return "flip" if tta is True else str(tta)


def evaluate(checkpoint_or_run: Path | str, split: str = "test", data: str | None = None, tta: bool | str = False, *,
             data_dir: Path | str | None = None, device: str = "auto", batch_size: int | None = None
             ) -> dict[str, Any]:
    """Accuracy, loss, per-class precision/recall/F1 and the confusion matrix of a trained model.

    Needs nothing but the run: the data set, its preparation and the normalization come from the checkpoint.

    Args:
        checkpoint_or_run: a run directory (its checkpoints/best.pt, selected on validation) or a checkpoint.
        split: "test" (the official test split), "val" (the run's own validation split) or "train" (the images
            it trained on, unaugmented, BatchNorm in eval mode: the training error of the final or best model).
        data: another labelled data set with the same classes (e.g. "imagefolder:photos"), instead of the run's.
        tta: test-time augmentation: "flip" (or True) averages each prediction with that of the mirrored image;
            "shift" also with both moved by one pixel (six views).
        data_dir: the folder holding the data set, if not where the run found it.
        device: auto, cpu, cuda or mps.
        batch_size: images per evaluation batch (default: the run's eval.batch_size).

    Returns:
        loss, acc, acc5, n, per_class rows, macro and weighted averages, confusion_matrix, plus split, tta,
        checkpoint, step, model, data and `files` (eval_<tag>.json and confusion_<tag>.csv, written beside the
        run; <tag> is the split, plus the data set when another one, plus "_tta" or "_tta-shift").

    Raises:
        UserError: no such run/checkpoint/split, data with other classes, a bad batch size or device.
    """
    return score(checkpoint_or_run, split, data, tta, data_dir=data_dir, device=device,
                 batch_size=batch_size).result
