"""`resnetlab predict CKPT IMAGE_OR_FOLDER...`: the top-k classes of image files.

Each file is read as the run read its images (`images.read_images`), then goes through the run's evaluation Loader
(device resize, normalization with the checkpoint's statistics, channels_last) like the test images: the same
pixels give the same logits as `resnetlab evaluate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from resnetlab.engine.devices import select_device
from resnetlab.engine.evaluate import predict_batches
from resnetlab.errors import UserError
from resnetlab.inference.images import expand_inputs, input_loader, read_images
from resnetlab.inference.loading import load_checkpoint


def predict(ckpt: Path | str, inputs: Sequence[Path | str], top_k: int = 3) -> list[dict[str, Any]]:
    """The `top_k` most probable classes of every image file.

    Args:
        ckpt: a checkpoint file or a run directory (its best checkpoint).
        inputs: image files and/or folders of them.
        top_k: how many classes per image (at most the number of classes).

    Returns:
        One dict per file, in input order: {"path", "predictions": [{"class", "prob"}, ...]} or, for a file that
        cannot be read as an image, {"path", "error"}.
    """

    if top_k < 1:
        raise UserError(f"--top-k must be at least 1; got {top_k}")
    paths = expand_inputs(inputs)
    model, info = load_checkpoint(ckpt)
    results, groups = read_images(paths, info)
    for group in groups:  # one batch per image size (only with data.resize and no fixed size)
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

    device = select_device("auto")
    logits, _ = predict_batches(model.to(device), input_loader(images, info, device))
    return logits
