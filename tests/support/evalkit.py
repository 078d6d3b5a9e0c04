"""Helpers of the evaluation tests: a hand-made checkpoint, a generated image folder, a tiny trained run
(the fixtures that use them are in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from resnetlab.engine.checkpoint import FORMAT_VERSION, save_checkpoint
from resnetlab.engine.config import config_to_dict, load_config
from resnetlab.models import create_model

CLASSES = ["circle", "cross", "square"]


def _perturb_batchnorm(model: torch.nn.Module, seed: int) -> None:
    """Give every BatchNorm non-trivial running statistics, so eval mode differs from a fresh net."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)


def write_checkpoint(path: Path, *, in_chans: int = 1, image_size: int = 16, overrides: tuple[str, ...] = (),
                     normalization: dict | None = None) -> Path:
    """A resnet20 checkpoint in our format with random weights (no training needed).

    `image_size` is what the model sees (data.resize when the overrides set it); `normalization` defaults to a
    per-channel mean 0.25 and std 0.5.
    """
    cfg = load_config("fmnist-resnet20", ["model.name=resnet20", *overrides])
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=len(CLASSES), in_chans=in_chans)
    _perturb_batchnorm(model, 1)
    state = {"model": model.state_dict(), "config": config_to_dict(cfg), "classes": CLASSES,
             "normalization": normalization or {"mean": [0.25] * in_chans, "std": [0.5] * in_chans},
             "in_chans": in_chans,
             "image_size": image_size, "num_classes": len(CLASSES), "step": 7, "epoch": 1, "best": None,
             "format_version": FORMAT_VERSION}
    return save_checkpoint(path, state)


# ------------------------------------------------------------------------------------- tiny image folder


def shape_image(kind: int, gen: torch.Generator, size: int = 16) -> torch.Tensor:
    """A noisy grey 16x16 drawing of class `kind` (0 circle, 1 cross, 2 square) at a random position."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cy, cx = (torch.randint(5, size - 5, (2,), generator=gen)).tolist()
    r = int(torch.randint(3, 5, (1,), generator=gen))
    if kind == 0:
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 - r * r).abs() <= r
    elif kind == 1:
        mask = (((yy - cy).abs() <= 1) & ((xx - cx).abs() <= r)) | (((xx - cx).abs() <= 1) & ((yy - cy).abs() <= r))
    else:
        mask = ((yy - cy).abs() <= r) & ((xx - cx).abs() <= r) & (((yy - cy).abs() == r) | ((xx - cx).abs() == r))
    noise = torch.randint(0, 90, (size, size), generator=gen)
    return (noise + 160 * mask).clamp(0, 255).to(torch.uint8)


def write_image_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """root/{train,test}/CLASS/NNN.png with the given number of images per split and class."""
    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    for split, count in per_class.items():
        for kind, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(shape_image(kind, gen).numpy(), mode="L").save(folder / f"{i:03d}.png")
    return root


TINY_RUN_OVERRIDES = (
    "model.name=resnet20", "data.channels=1", "data.val_size=15", "data.batch_size=16", "eval.batch_size=32",
    "train.iters=40", "train.eval_every=20", "train.device=cpu", "train.quiet=true", "train.seed=0",
    "train.threads=1",  # tiny convolutions: one thread is fastest on a shared 2-core machine
)


def train_tiny_run(base: Path) -> Path:
    """BASE/run: resnet20 trained for 40 iterations on a generated 3-class image folder (16x16 grey) in BASE."""
    from resnetlab.engine.trainer import train

    data = write_image_folder(base / "shapes", {"train": 40, "test": 12})
    cfg = load_config("fmnist-resnet20", [*TINY_RUN_OVERRIDES, f"data.name=imagefolder:{data}",
                                          f"train.out_dir={base / 'run'}"])
    return train(cfg).run_dir
