"""The in-memory data set (`ImageSet`), its seeded stratified split, and the statistics used to normalize it.

Everything here works on uint8 tensors N x C x H x W: CIFAR-10 is 150 MB and Fashion-MNIST 47 MB that way,
so a whole split lives in memory (and on the GPU when there is one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from resnetlab.errors import UserError

# Images are reduced in chunks so that statistics never hold a float copy of the whole set.
_CHUNK = 4096
# ITU-R 601-2 luma in 16-bit fixed point, exactly as PIL's convert("L") computes it (rounded).
_LUMA_Q16 = (19595, 38470, 7471)


@dataclass
class ImageSet:
    """Images and labels of one split, all in memory.

    Attributes:
        images: uint8 tensor (N, C, H, W).
        labels: int64 tensor (N,), values in [0, len(classes)).
        classes: class names; `labels` index into it.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"ImageSet.images must be a uint8 N x C x H x W tensor; got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"ImageSet.labels must be an int64 tensor of {self.images.shape[0]} labels; got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        """One line, as torchvision's datasets print: never the tensors (hundreds of lines of pixels)."""
        shown = ", ".join(self.classes[:4]) + (f", ... ({len(self.classes)})" if len(self.classes) > 4 else "")
        return (f"ImageSet({len(self):,} images of {self.channels}x{self.images.shape[2]}x{self.images.shape[3]} "
                f"uint8 on {self.images.device}, {len(self.classes)} classes: {shown})")

    @property
    def channels(self) -> int:
        """C."""
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageSet:
        """The images at `indices` (in that order), with the same class names."""
        index = torch.as_tensor(indices, dtype=torch.int64, device=self.images.device)
        return ImageSet(self.images.index_select(0, index), self.labels.index_select(0, index.to(self.labels.device)),
                        list(self.classes))


def select_classes(imageset: ImageSet, wanted: Sequence[int | str]) -> ImageSet:
    """The images of the classes `wanted` (names, or indices into `imageset.classes`), relabelled 0..k-1 in the
    order given: e.g. a source model trained on five classes, then fine-tuned on the other five.

    Raises:
        UserError: an unknown class name or index, or a class named twice.
    """
    index = []
    for item in wanted:
        if isinstance(item, int) and 0 <= item < len(imageset.classes):
            index.append(item)
        elif isinstance(item, str) and item in imageset.classes:
            index.append(imageset.classes.index(item))
        else:
            raise UserError(f"data.classes: no class {item!r} here; the classes are 0..{len(imageset.classes) - 1}: "
                            f"{', '.join(imageset.classes)}")
    if len(set(index)) != len(index):
        raise UserError(f"data.classes names a class twice: {list(wanted)}")
    relabel = torch.full((len(imageset.classes),), -1, dtype=torch.int64)
    relabel[torch.tensor(index)] = torch.arange(len(index))
    new = relabel[imageset.labels.cpu()]
    counts = torch.bincount(new[new >= 0], minlength=len(index))
    if bool((counts == 0).any()):
        empty = [imageset.classes[index[i]] for i in torch.nonzero(counts == 0).flatten().tolist()]
        raise UserError(f"data.classes: no images of class {', '.join(map(repr, empty))} here; pick classes that "
                        "have images")
    keep = torch.nonzero(new >= 0).flatten()
    return ImageSet(imageset.images.index_select(0, keep.to(imageset.images.device)), new[keep].to(
        imageset.labels.device), [imageset.classes[i] for i in index])


# ------------------------------------------------------------------------------------------------ split


def _val_quota(counts: np.ndarray, val_size: int) -> np.ndarray:
    """Validation images per class, proportional to the class sizes and summing to `val_size`.

    Largest-remainder rounding in exact integer arithmetic (ties go to the lower class index), so the quota
    is the same on every machine.
    """
    total = int(counts.sum())
    floor = counts * val_size // total
    remainder = counts * val_size % total
    missing = val_size - int(floor.sum())
    order = sorted(range(len(counts)), key=lambda k: (-int(remainder[k]), k))
    for k in order[:missing]:
        floor[k] += 1
    return floor


def split_train_val(imageset: ImageSet, val_size: int, seed: int) -> tuple[ImageSet, ImageSet | None]:
    """Carve a validation split out of a training split, stratified by class.

    Each class gives a share of `val_size` proportional to its size (500 per class for CIFAR-10's 5,000 of
    50,000, as in He et al. 2016, Sec. 4.2). Which images go is decided by one `torch.randperm` on a CPU
    generator seeded with `seed`, so the split is identical on every machine for a given torch version.
    Both parts keep the original order of the images.

    Args:
        imageset: the official training split.
        val_size: number of validation images; 0 = no validation split.
        seed: the run's seed.

    Returns:
        (train, val), or (imageset, None) when `val_size` is 0.
    """
    if val_size == 0:
        return imageset, None
    n = len(imageset)
    if not 0 < val_size < n:
        raise UserError(f"data.val_size={val_size} must be between 0 and the {n} training images; lower it")
    labels = imageset.labels.cpu().numpy()
    counts = np.bincount(labels, minlength=len(imageset.classes))
    quota = _val_quota(counts, val_size)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    # Group the shuffled indices by class (a stable sort keeps each class in shuffled order), then take the
    # first quota[k] of class k. The bookkeeping is numpy: exact, and free of thread start-up costs.
    by_class = perm[np.argsort(labels[perm], kind="stable")]
    grouped_labels = labels[by_class]
    rank_in_class = np.arange(n) - (np.cumsum(counts) - counts)[grouped_labels]
    is_val = rank_in_class < quota[grouped_labels]
    val_index = torch.from_numpy(np.sort(by_class[is_val]))
    train_index = torch.from_numpy(np.sort(by_class[~is_val]))
    return imageset.subset(train_index), imageset.subset(val_index)


# ------------------------------------------------------------------------------------------- statistics


def channel_stats(imageset: ImageSet) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of the pixels, in [0, 1] units.

    Computed exactly from a 256-bin histogram of each channel (float64 sums of counts), so the result does
    not depend on chunking or summation order. The standard deviation is the population one over all pixels.
    """
    means, stds = [], []
    values = torch.arange(256, dtype=torch.float64) / 255
    for c in range(imageset.channels):
        hist = torch.zeros(256, dtype=torch.float64)
        for start in range(0, len(imageset), _CHUNK):
            chunk = imageset.images[start:start + _CHUNK, c].reshape(-1).cpu()
            hist += torch.bincount(chunk, minlength=256).to(torch.float64)
        n = hist.sum()
        mean = (hist * values).sum() / n
        var = (hist * (values - mean) ** 2).sum() / n
        means.append(float(mean))
        stds.append(float(var.sqrt()))
    return tuple(means), tuple(stds)


def pixel_mean(imageset: ImageSet) -> torch.Tensor:
    """The mean image (float32 C x H x W in [0, 1] units): the per-pixel mean He et al. 2016 subtract (Sec. 4.2)."""
    total = torch.zeros(imageset.images.shape[1:], dtype=torch.int64)
    for start in range(0, len(imageset), _CHUNK):
        total += imageset.images[start:start + _CHUNK].cpu().sum(0, dtype=torch.int64)  # exact integer sum
    return (total.to(torch.float64) / (255 * max(1, len(imageset)))).to(torch.float32)


# ------------------------------------------------------------------------------------- size and channels


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (N, C, H, W) images with `channels` channels: grey is repeated, RGBA drops alpha, RGB -> luma.

    The luma is ITU-R 601-2 in the fixed-point form PIL's `convert("L")` uses, so a folder of PNGs and a
    tensor data set become the same grey values.
    """
    c = images.shape[1]
    if c == channels:
        return images
    if c == 4:  # RGBA / RGBX: alpha is dropped, as PIL's convert("RGB") does
        return convert_channels(images[:, :3].contiguous(), channels)
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        out = torch.empty((images.shape[0], 1, *images.shape[2:]), dtype=torch.uint8)
        for start in range(0, images.shape[0], _CHUNK):
            rgb = images[start:start + _CHUNK].to(torch.int32)
            luma = (rgb[:, 0] * _LUMA_Q16[0] + rgb[:, 1] * _LUMA_Q16[1] + rgb[:, 2] * _LUMA_Q16[2] + 0x8000) >> 16
            out[start:start + _CHUNK, 0] = luma.to(torch.uint8)
        return out
    raise UserError(f"cannot convert {c}-channel images to {channels} channels; use data.channels=1 or 3")


def center_crop_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """(resized_h, resized_w, top, left): shorter side to `size`, then the centered size x size square.

    The rounding follows torchvision's Resize(int) and CenterCrop, so our preprocessing matches the seeds'.
    """
    if height <= width:
        new_h, new_w = size, int(size * width / height)
    else:
        new_h, new_w = int(size * height / width), size
    return new_h, new_w, int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> (N, C, size, size): bilinear resize of the shorter side (antialiased), center crop."""
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    new_h, new_w, top, left = center_crop_box(h, w, size)
    out = torch.empty((n, c, size, size), dtype=torch.uint8)
    for start in range(0, n, _CHUNK):
        chunk = images[start:start + _CHUNK].cpu().to(torch.float32)
        resized = F.interpolate(chunk, size=(new_h, new_w), mode="bilinear", align_corners=False,
                                antialias=new_h < h)
        out[start:start + _CHUNK] = resized[:, :, top:top + size, left:left + size].round().clamp(0, 255)
    return out
