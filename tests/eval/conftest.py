"""Fixtures for the evaluation tests: a hand-made checkpoint, a tiny PNG image folder, one tiny trained run."""

from __future__ import annotations

from pathlib import Path

import pytest
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


def write_checkpoint(path: Path, *, in_chans: int = 1, image_size: int = 16, overrides: tuple[str, ...] = ()) -> Path:
    """A resnet20 checkpoint in our format with random weights (no training needed)."""
    cfg = load_config(None, ["model.name=resnet20", *overrides])
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=len(CLASSES), in_chans=in_chans)
    _perturb_batchnorm(model, 1)
    state = {"model": model.state_dict(), "config": config_to_dict(cfg), "classes": CLASSES,
             "normalization": {"mean": [0.25] * in_chans, "std": [0.5] * in_chans}, "in_chans": in_chans,
             "image_size": image_size, "num_classes": len(CLASSES), "step": 7, "epoch": 1, "best": None,
             "format_version": FORMAT_VERSION}
    return save_checkpoint(path, state)


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """RUN/checkpoints/best.pt of an untrained resnet20 (1 channel, 3 classes, 16 px)."""
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "checkpoints" / "best.pt")
