"""`resnetlab predict CKPT IMAGE_OR_FOLDER...`: the top-k classes of image files.

Each file is decoded and converted to the checkpoint's channels and image size by the function that loads an
image folder (`resnetlab.data.read_image`), then goes through the run's evaluation Loader (device resize,
normalization with the checkpoint's statistics, channels_last) like the test images: the same pixels give the
same logits as `resnetlab evaluate`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from resnetlab.data import ImageSet, read_image, resize_images
from resnetlab.data.folder import IMAGE_EXTENSIONS
from resnetlab.engine.builders import make_loader
from resnetlab.engine.checkpoint import load_checkpoint
from resnetlab.engine.config import config_from_dict
from resnetlab.engine.devices import select_device
from resnetlab.engine.evaluate import checkpoint_path, predict_batches
from resnetlab.errors import UserError

log = logging.getLogger(__name__)


def expand_inputs(inputs: Sequence[Path | str]) -> list[Path]:
    """Files as given, and the image files under each folder (recursively, sorted)."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                log.warning("%s holds no image files (%s)", path, " ".join(sorted(IMAGE_EXTENSIONS)))
            paths += found
        else:
            paths.append(path)  # a missing or unreadable file is reported per file, the others still run
    if not paths:
        raise UserError("no image files to predict; pass image files (PNG, JPEG, ...) or folders that hold them")
    return paths


def stored_size(info: dict[str, Any]) -> int | None:
    """The side of the images the run kept in memory, or None when any square size will do.

    The loader may resize batches on the device (`data.resize`) after that, exactly as for the test images.
    """
    mean = torch.tensor(info["normalization"]["mean"])
    if mean.ndim == 3:  # the per-pixel mean fixes the size
        return int(mean.shape[-1])
    data = info["config"].get("data", {})
    if data.get("image_size"):
        return int(data["image_size"])
    if data.get("resize"):
        return None
    return int(info["image_size"])


def load_image(path: Path, in_chans: int, size: int | None) -> torch.Tensor:
    """An image file as uint8 (in_chans, S, S), decoded and converted exactly as an image folder is loaded.

    `resnetlab.data.read_image` converts the channels (PIL's luma for RGB -> grey) and resizes the shorter
    side to `size` and crops the centre; a file with the run's size and channels is used pixel for pixel.
    `size` None keeps the size (the centre square is cropped; the loader resizes it on the device).

    Raises:
        UserError: the file is missing or not a readable image.
    """
    image = read_image(path, image_size=size, channels=in_chans)
    if size is None and image.shape[-1] != image.shape[-2]:
        image = resize_images(image.unsqueeze(0), min(image.shape[-2:]))[0]
    return image


def predict(ckpt: Path | str, inputs: Sequence[Path | str], top_k: int = 3) -> list[dict[str, Any]]:
    """The `top_k` most probable classes of every image file.

    Args:
        ckpt: a checkpoint file or a run directory (its best.pt).
        inputs: image files and/or folders of them.
        top_k: how many classes per image (at most the number of classes).

    Returns:
        One dict per file, in input order: {"path", "predictions": [{"class", "prob"}, ...]} or, for a file that
        cannot be read as an image, {"path", "error"}.
    """

    if top_k < 1:
        raise UserError(f"--top-k must be at least 1; got {top_k}")
    paths = expand_inputs(inputs)
    model, info = load_checkpoint(checkpoint_path(ckpt))
    size, in_chans = stored_size(info), int(info["in_chans"])
    results: list[dict[str, Any]] = [{"path": str(path)} for path in paths]
    by_shape: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
    for slot, path in enumerate(paths):
        try:
            image = load_image(path, in_chans, size)
        except UserError as exc:
            results[slot]["error"] = str(exc)
            continue
        by_shape.setdefault(tuple(image.shape), []).append((slot, image))
    for group in by_shape.values():  # one batch per image size (only with data.resize and no fixed size)
        probs = predict_logits(model, info, torch.stack([image for _, image in group])).softmax(dim=1)
        values, indices = probs.topk(min(top_k, probs.shape[1]), dim=1)
        for (slot, _), vals, idx in zip(group, values.tolist(), indices.tolist(), strict=True):
            results[slot]["predictions"] = [{"class": info["classes"][i], "prob": p}
                                            for i, p in zip(idx, vals, strict=True)]
    return results


def predict_logits(model: torch.nn.Module, info: dict[str, Any], images: torch.Tensor) -> torch.Tensor:
    """Logits of uint8 images (N, C, H, W) through the run's evaluation Loader (resize, normalize).

    Args:
        model: the checkpoint's model.
        info: the checkpoint's info (config, classes, normalization).
        images: uint8 images at the checkpoint's image size.

    Returns:
        (N, K) float32 logits on the CPU, in the order of `images`.
    """

    cfg = config_from_dict(info["config"])
    device = select_device("auto")
    imageset = ImageSet(images=images, labels=torch.zeros(len(images), dtype=torch.long),
                        classes=list(info["classes"]))
    loader = make_loader(imageset, cfg, train=False, device=device, normalization=info["normalization"])
    logits, _ = predict_batches(model.to(device), loader)
    return logits
