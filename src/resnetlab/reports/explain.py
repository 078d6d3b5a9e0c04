"""Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization"): where in an image the evidence for a class lies.

The map is the ReLU of the last residual stage's feature maps (layer3 of the CIFAR nets, layer4 of the ImageNet
nets: the deepest ones that still have a spatial extent), each weighted by the spatial mean of the class score's
gradient with respect to it, upsampled to the image. It is computed by captum's `LayerGradCam`, a maintained,
tested implementation from the PyTorch project (`pip install 'resnetlab[explain]'`), rather than by hand-written
hooks. Images are read and preprocessed exactly as `resnetlab predict` does (`inference.images.read_images`, the
evaluation Loader with the checkpoint's resize and normalization), so the map explains the prediction `predict`
gives.

`explain()` backs `resnetlab explain CKPT IMAGE_OR_FOLDER... --out DIR`; `plot_gradcam_wrong()` draws the most
confidently wrong test images of a run for report.html.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from resnetlab.engine.devices import select_device
from resnetlab.errors import UserError
from resnetlab.inference.evaluate import Scored
from resnetlab.inference.images import expand_inputs, input_loader, read_images
from resnetlab.inference.loading import load_checkpoint
from resnetlab.reports.plots import _save, _to_hwc, most_confident_wrong

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'resnetlab[explain]'"
OVERLAY_ALPHA = 0.5  # the heat map over the image: half and half keeps both readable
CMAP = "jet"  # the colour map of the Grad-CAM paper's figures
BATCH = 64  # images per Grad-CAM pass (a backward pass keeps every activation of the batch)


def captum_available() -> bool:
    """Whether captum (the `explain` extra) can be imported."""
    try:
        import captum.attr  # noqa: F401
    except ImportError:
        return False
    return True


def target_layer(model: nn.Module) -> nn.Module:
    """The last residual stage (`layerN` with the highest N), else the last 4-d conv module of the model."""
    stages = sorted(((int(m.group(1)), module) for name, module in model.named_children()
                     if (m := re.fullmatch(r"layer(\d+)", name))), key=lambda item: item[0])
    if stages:
        return stages[-1][1]
    convs = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise UserError(f"{type(model).__name__} has no convolution to compute Grad-CAM on")
    return convs[-1]


def gradcam(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Grad-CAM maps of the classes `targets` for the normalized batch `x`, upsampled to `size`.

    Args:
        model: the network, in eval mode, on x's device.
        x: (B, C, H, W) normalized input, as the evaluation Loader gives it.
        targets: (B,) class indices to explain.
        size: (height, width) of the maps returned (e.g. the stored image's).

    Returns:
        (B, height, width) float32 maps on the CPU, each scaled to a maximum of 1 (all zero when no location
        speaks for the class).
    """
    try:
        from captum.attr import LayerGradCam
    except ImportError:
        raise UserError(f"Grad-CAM needs captum: {INSTALL_HINT}") from None
    with torch.enable_grad():
        cam = LayerGradCam(model, target_layer(model)).attribute(x, target=targets.to(x.device),
                                                                 relu_attributions=True)  # (B, 1, h, w)
    cam = F.interpolate(cam.detach().float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp(min=1e-12)
    return (cam / peak[:, None, None]).clamp(0, 1).cpu()


def model_inputs(images: torch.Tensor, info: dict[str, Any], device: torch.device) -> torch.Tensor:
    """uint8 images (N, C, H, W) as the model sees them: the checkpoint's evaluation Loader (resize, normalize)."""
    return torch.cat([x for x, _ in input_loader(images, info, device)])


def explain_images(model: nn.Module, info: dict[str, Any], images: torch.Tensor,
                   targets: torch.Tensor | None = None, device: torch.device | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities and Grad-CAM maps of uint8 images of one size.

    Args:
        model: a checkpoint's model.
        info: its info (config, classes, normalization).
        images: (N, C, H, W) uint8 at the checkpoint's stored size.
        targets: (N,) classes to explain; None = the predicted ones.
        device: where to compute (default: the best available).

    Returns:
        (probabilities (N, K), maps (N, H, W) in [0, 1] at the images' size), on the CPU.
    """
    device = device or select_device("auto")
    model = model.to(device).eval()
    x = model_inputs(images, info, device)
    with torch.no_grad():
        probs = model(x).float().softmax(dim=1).cpu()
    chosen = probs.argmax(dim=1) if targets is None else targets
    return probs, gradcam(model, x, chosen, tuple(images.shape[-2:]))


# -------------------------------------------------------------------------------------- drawing


def _overlay(ax: Any, image: torch.Tensor, cam: torch.Tensor | None, title: str, color: str = "black") -> None:
    ax.set_axis_off()
    ax.imshow(_to_hwc(image), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    if cam is not None:
        ax.imshow(cam.numpy(), cmap=CMAP, vmin=0, vmax=1, alpha=OVERLAY_ALPHA, interpolation="bilinear")
    ax.set_title(title, fontsize=8, color=color, pad=3)


def draw_explanation(image: torch.Tensor, panels: Sequence[tuple[str, torch.Tensor]], out: Path,
                     title: str | None = None) -> Path:
    """The image, then one Grad-CAM overlay per (caption, map) panel, side by side in one PNG."""
    fig = Figure(figsize=(2.4 * (1 + len(panels)), 2.8))
    axes = fig.subplots(1, 1 + len(panels), squeeze=False)[0]
    _overlay(axes[0], image, None, "image")
    for ax, (caption, cam) in zip(axes[1:], panels, strict=True):
        _overlay(ax, image, cam, caption)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, out)


def _class_index(name: str, classes: Sequence[str]) -> int:
    if name in classes:
        return list(classes).index(name)
    if name.isdigit() and int(name) < len(classes):
        return int(name)
    raise UserError(f"unknown class {name!r}; the checkpoint's classes are: {', '.join(classes)}")


def _out_name(path: Path, used: set[str]) -> str:
    stem, n = f"{path.stem}_gradcam", 1
    name = f"{stem}.png"
    while name in used:  # two inputs with one file name (from different folders)
        n += 1
        name = f"{stem}_{n}.png"
    used.add(name)
    return name


def explain(checkpoint: Path | str, inputs: Sequence[Path | str], out_dir: Path | str,
            target_class: str | None = None, device: str = "auto") -> list[dict[str, Any]]:
    """Write OUT_DIR/<image>_gradcam.png for every image: the image and the Grad-CAM of its predicted class
    (with its probability), and of `target_class` too when given.

    Args:
        checkpoint: a checkpoint file or a run directory (its best checkpoint).
        inputs: image files and/or folders of them.
        out_dir: where the PNGs go (created).
        target_class: a class name (or index) to explain as well as the predicted one.
        device: auto, cpu, cuda or mps.

    Returns:
        One dict per input, in order: {"path", "out", "predicted", "prob"[, "class", "class_prob"]}, or
        {"path", "error"} for a file that is not a readable image.
    """
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise UserError(f"--out {out_dir} is a file; give a folder for the Grad-CAM images (it is created)")
    paths = expand_inputs(inputs)
    model, info = load_checkpoint(checkpoint)
    classes = list(info["classes"])
    wanted = _class_index(target_class, classes) if target_class is not None else None
    target = select_device(device)
    results, groups = read_images(paths, info)
    used: set[str] = set()
    for group in groups:  # one size unless the run resized on the device (data.resize)
        for start in range(0, len(group), BATCH):
            chunk = group[start:start + BATCH]
            images = torch.stack([image for _, image in chunk])
            probs, cams = explain_images(model, info, images, device=target)
            asked = explain_images(model, info, images, torch.full((len(chunk),), wanted), target)[1] \
                if wanted is not None else None
            for i, (slot, image) in enumerate(chunk):
                pred = int(probs[i].argmax())
                item = results[slot]
                item.update(predicted=classes[pred], prob=float(probs[i, pred]))
                panels = [(f"predicted: {classes[pred]} ({100 * item['prob']:.1f}%)", cams[i])]
                if asked is not None:
                    item.update({"class": classes[wanted], "class_prob": float(probs[i, wanted])})
                    panels.append((f"class: {classes[wanted]} ({100 * item['class_prob']:.1f}%)", asked[i]))
                name = _out_name(paths[slot], used)
                item["out"] = str(draw_explanation(image, panels, Path(out_dir) / name, title=paths[slot].name))
    return results


def plot_gradcam_wrong(scored: Scored, out: Path | str, count: int = 8, ncols: int = 4) -> Path:
    """Grad-CAM of the predicted class on the `count` most confidently wrong images of a scored split.

    Args:
        scored: `inference.evaluate.score`'s result (images, targets, scores, checkpoint).
        out: the PNG to write.
        count: how many images at most.
        ncols: images per row.
    """
    classes = [row["class"] for row in scored.result["per_class"]]
    order, pred, confidence = most_confident_wrong(scored.targets, scored.scores, count)
    if len(order) == 0:
        fig = Figure(figsize=(6, 1.2))
        fig.text(0.5, 0.5, f"no wrong predictions among {len(scored.targets):,} images", ha="center", va="center")
        return _save(fig, out)
    model, info = load_checkpoint(scored.result["checkpoint"])
    images = scored.images[order]
    _, cams = explain_images(model, info, images, pred[order])
    ncols = min(ncols, len(order))
    nrows = math.ceil(len(order) / ncols)
    fig = Figure(figsize=(2.1 * ncols, 2.4 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(order):
            ax.set_axis_off()
            continue
        j = int(order[i])
        title = (f"true: {classes[int(scored.targets[j])]}\npred: {classes[int(pred[j])]} "
                 f"({100 * float(confidence[j]):.0f}%)")
        _overlay(ax, images[i], cams[i], title, color="#b00020")
    fig.tight_layout()
    return _save(fig, out)
