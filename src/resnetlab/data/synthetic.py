"""A generated image folder of coloured shapes: data that is always there (no download), for examples and demos.

`write_shapes(root)` draws `root/{train,test}/{circle,cross,square,triangle}/NNNN.png`: one shape per image at a
random place, size and colour on a noisy background of another colour, 32x32 RGB like CIFAR-10. The images are
a pure function of `seed`, so two calls write the same files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from PIL import Image

SHAPES = ("circle", "cross", "square", "triangle")
DEFAULT_COUNTS = {"train": 300, "test": 100}  # images per class and split: a few seconds of training on a CPU


def shape_mask(kind: str, size: int, gen: torch.Generator) -> torch.Tensor:
    """A (size, size) boolean mask of one shape with a random centre and radius (a quarter to a third of `size`)."""
    r = int(torch.randint(size // 4, size // 3 + 1, (1,), generator=gen))
    cy, cx = torch.randint(r, size - r, (2,), generator=gen).tolist()
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    dy, dx = yy - cy, xx - cx
    if kind == "circle":
        return dy**2 + dx**2 <= r * r
    if kind == "square":
        return (dy.abs() <= r) & (dx.abs() <= r)
    if kind == "triangle":  # pointing up: wider towards the bottom
        return (dy.abs() <= r) & (2 * dx.abs() <= dy + r)
    if kind == "cross":
        bar = max(1, r // 3)
        return ((dy.abs() <= bar) & (dx.abs() <= r)) | ((dx.abs() <= bar) & (dy.abs() <= r))
    raise ValueError(f"unknown shape {kind!r}; one of {', '.join(SHAPES)}")


def shape_image(kind: str, size: int, gen: torch.Generator) -> torch.Tensor:
    """A uint8 (3, size, size) image: the shape in one random colour on a noisy background of another."""
    fg, bg = torch.randint(0, 256, (2, 3), generator=gen)
    while (fg - bg).abs().sum() < 150:  # keep the shape visible
        fg = torch.randint(0, 256, (3,), generator=gen)
    mask = shape_mask(kind, size, gen)
    noise = torch.randint(-25, 26, (3, size, size), generator=gen)
    image = torch.where(mask, fg.view(3, 1, 1), bg.view(3, 1, 1)) + noise
    return image.clamp(0, 255).to(torch.uint8)


def write_shapes(root: str | os.PathLike, counts: Mapping[str, int] | None = None, size: int = 32,
                 seed: int = 0) -> str:
    """Write the shapes image folder and return its data set name for `load_dataset` / `data.name`.

    Args:
        root: the folder to write (created; files of the same names are overwritten).
        counts: images per class for each split folder (default: 300 train, 100 test).
        size: image side in pixels.
        seed: the images are a pure function of it.

    Returns:
        "imagefolder:ROOT" (absolute).
    """
    root = Path(root).expanduser().resolve()
    gen = torch.Generator().manual_seed(seed)
    for split, count in (counts or DEFAULT_COUNTS).items():
        for kind in SHAPES:
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = shape_image(kind, size, gen).permute(1, 2, 0).numpy()
                Image.fromarray(pixels, mode="RGB").save(folder / f"{i:04d}.png")
    return f"imagefolder:{root}"
