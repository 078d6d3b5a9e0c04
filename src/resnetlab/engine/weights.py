"""What a run takes from the weights it starts from (model.weights): their normalization, image size and options.

Pretrained features expect the inputs they were trained on. With torchvision's weights by name (IMAGENET1K_V1)
a run normalizes with ImageNet's mean and std and, unless data.image_size or data.resize is set, trains at the
weights' crop size (224); with one of our checkpoints it normalizes with the checkpoint's statistics. Setting
data.weights_normalization=false (or data.normalize=pixel) measures the statistics on the training split instead,
and data.resize / data.image_size train at another size (smaller is faster; the features are less sharp).
One of our checkpoints of the same model also brings its model options (model.shortcut, model.stem and
model.options, e.g. shortcut B), each unless the config sets it: the weights fit the net they were trained in.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from resnetlab.engine.config import Config
from resnetlab.models.pretrained import get_weights, is_weight_name

log = logging.getLogger(__name__)


def weights_statistics(weights: str | None, model: str) -> dict[str, list[float]] | None:
    """{"mean", "std"} per channel that `weights` were trained with, or None (no weights, a bare state dict)."""
    if not weights:
        return None
    if is_weight_name(weights):
        pretrained = get_weights(model, weights)
        return {"mean": list(pretrained.mean), "std": list(pretrained.std)}
    try:  # one of our checkpoints records its normalization; a bare state dict does not
        saved = torch.load(Path(weights).expanduser(), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable here: create_model reports why, in one line
        return None
    norm = saved.get("normalization") if isinstance(saved, dict) else None
    if not isinstance(norm, dict) or not all(_flat(norm.get(key)) for key in ("mean", "std")):
        return None  # none recorded, or a per-pixel mean (data.normalize=pixel) that fixes another image size
    return {"mean": [float(m) for m in norm["mean"]], "std": [float(s) for s in norm["std"]]}


def _flat(values: Any) -> bool:
    return isinstance(values, list) and bool(values) and all(isinstance(v, (int, float)) for v in values)


def weights_normalization(cfg: Config, in_chans: int) -> dict[str, list[float]] | None:
    """The normalization of a run that starts from weights, or None to measure it on the training split.

    Used with data.weights_normalization and data.normalize=channel. Grey images with colour statistics take
    their channel average (the first conv of colour weights is summed over colour for grey input).
    """
    d = cfg.data
    if not d.weights_normalization or d.normalize != "channel":
        return None
    stats = weights_statistics(cfg.model.weights, cfg.model.name)
    if stats is None:
        return None
    if len(stats["mean"]) != in_chans:
        if in_chans != 1:
            return None  # e.g. grey weights for colour data: the model refuses them anyway
        stats = {key: [sum(values) / len(values)] for key, values in stats.items()}
    log.info("normalizing with the statistics of %s (mean %s, std %s; data.weights_normalization=false measures "
             "them on the training split)", cfg.model.weights, _short(stats["mean"]), _short(stats["std"]))
    return stats


def _short(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


def _saved_config(weights: str) -> dict[str, Any] | None:
    """The config a checkpoint of ours was trained with, or None (a bare state dict, an unreadable file)."""
    try:
        saved = torch.load(Path(weights).expanduser(), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # unreadable here: create_model reports why, in one line
        return None
    config = saved.get("config") if isinstance(saved, dict) else None
    return config if isinstance(config, dict) and isinstance(config.get("model"), dict) else None


def adopt_checkpoint_options(cfg: Config) -> Config:
    """`cfg` with the model options of the checkpoint in model.weights (same model name) that it leaves unset."""
    m = cfg.model
    if not m.weights or is_weight_name(m.weights):
        return cfg
    saved = (_saved_config(m.weights) or {}).get("model", {})
    if saved.get("name") != m.name:
        return cfg
    taken = []
    for key in ("shortcut", "stem"):
        if getattr(m, key) is None and saved.get(key) is not None:
            setattr(m, key, saved[key])
            taken.append(f"model.{key}={saved[key]}")
    options = saved.get("options") if isinstance(saved.get("options"), dict) else {}
    for key, value in options.items():
        if key not in m.options:
            m.options[key] = value
            taken.append(f"model.options.{key}={value}")
    if taken:
        log.info("took %s from %s (the net its weights were trained in; set them to override)", ", ".join(taken),
                 m.weights)
    return cfg


def apply_weights_defaults(cfg: Config) -> Config:
    """`cfg` with what its starting weights bring: the model options of one of our checkpoints (same model, unless
    set), and the image size of torchvision weights (their crop size) when neither data.image_size nor
    data.resize is set: image folders are decoded at that size, other data sets are resized on the device."""
    cfg = adopt_checkpoint_options(cfg)
    d = cfg.data
    if not is_weight_name(cfg.model.weights) or d.image_size is not None or d.resize is not None:
        return cfg
    size = get_weights(cfg.model.name, str(cfg.model.weights)).crop_size
    if d.name.strip().lower().startswith("imagefolder:"):
        d.image_size = size
        log.info("images at %d px, the size of %s (set data.image_size to train smaller)", size, cfg.model.weights)
    else:
        d.resize = size
        log.info("images resized to %d px on the device, the size of %s (set data.resize to train smaller)", size,
                 cfg.model.weights)
    return cfg
