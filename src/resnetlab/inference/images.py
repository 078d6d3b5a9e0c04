"""Image files as a checkpoint's input: found under folders, decoded and converted as the run read its images.

Each file is decoded and converted to the checkpoint's channels and image size by the function that loads an
image folder (`resnetlab.data.read_image`); `predict`, `export` and `reports.explain` then pass the uint8 images
through the run's evaluation Loader (device resize, normalization), like the test images.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from resnetlab.data import ImageSet, Loader, read_image, resize_images
from resnetlab.data.folder import IMAGE_EXTENSIONS
from resnetlab.engine.builders import make_loader
from resnetlab.engine.config import config_from_dict
from resnetlab.errors import UserError

log = logging.getLogger(__name__)

Group = list[tuple[int, torch.Tensor]]  # (index of the file among the inputs, uint8 image (C, S, S)), one shape


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


def read_images(paths: Sequence[Path], info: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Group]]:
    """Every file as the checkpoint's input (`load_image`), grouped by shape so that each group is one batch.

    Args:
        paths: image files (`expand_inputs`).
        info: the checkpoint's info (in_chans, normalization, config).

    Returns:
        (one result per file, in order: {"path"}, or {"path", "error"} for a file that is missing or not a readable
        image; the others' images in groups of one shape, several only with data.resize and no fixed size).
    """
    results: list[dict[str, Any]] = [{"path": str(path)} for path in paths]
    size, in_chans = stored_size(info), int(info["in_chans"])
    by_shape: dict[tuple[int, ...], Group] = {}
    for slot, path in enumerate(paths):
        try:
            image = load_image(path, in_chans, size)
        except UserError as exc:
            results[slot]["error"] = str(exc)
            continue
        by_shape.setdefault(tuple(image.shape), []).append((slot, image))
    return results, list(by_shape.values())


def input_loader(images: torch.Tensor, info: dict[str, Any], device: torch.device) -> Loader:
    """The run's evaluation Loader over uint8 images (N, C, H, W) of one size: resized and normalized as the run's
    test images are, in order (the labels are placeholders)."""
    imageset = ImageSet(images=images, labels=torch.zeros(len(images), dtype=torch.long),
                        classes=list(info["classes"]))
    return make_loader(imageset, config_from_dict(info["config"]), train=False, device=device,
                       normalization=info["normalization"])
