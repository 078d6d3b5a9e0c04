"""A torch hub cache for the tests of weights by name: there is no network here, so torchvision's files are
stood in for by state dicts of the right shapes, written where torch.hub keeps them ($TORCH_HOME/hub/checkpoints).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from resnetlab.models import create_model, get_weights


def use_torch_home(monkeypatch, folder: Path) -> Path:
    """Point torch.hub at `folder` (as TORCH_HOME does); returns its checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(folder))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return folder / "hub" / "checkpoints"


def fake_weights(model: str = "resnet18", seed: int = 1) -> dict[str, torch.Tensor]:
    """A state dict of `model` with 1000 classes (ImageNet's shapes), seeded: a stand-in for torchvision's file."""
    torch.manual_seed(seed)
    return create_model(model, num_classes=1000).state_dict()


def fill_cache(model: str = "resnet18", name: str = "IMAGENET1K_V1", seed: int = 1) -> tuple[Path, dict]:
    """Write fake weights at the cached path of torchvision's `name` entry; returns (path, state dict)."""
    path = get_weights(model, name).path
    path.parent.mkdir(parents=True, exist_ok=True)
    state = fake_weights(model, seed)
    torch.save(state, path)
    return path, state


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
