"""Fixtures for the experiments tests: a tiny generated IDX dataset for real end-to-end sweeps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support.official_formats import write_idx


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding mnist/ with the four IDX files: 10 classes of 16x16 images, each class a bright
    square at its own place plus noise (learnable in a few iterations); 160 train, 40 test images."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "mnist"
    folder.mkdir()
    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", 160), ("t10k", 40)):
        labels = torch.arange(n) % 10
        images = torch.randint(0, 60, (n, 16, 16), generator=gen)
        for i, label in enumerate(labels.tolist()):
            r, c = divmod(label, 4)
            images[i, 1 + 4 * r: 4 + 4 * r, 1 + 4 * c: 4 + 4 * c] = 250
        write_idx(folder, split, images.to(torch.uint8).numpy(), labels.to(torch.uint8).numpy(), gz=True)
    return root


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """These tests train tiny nets: one intra-op thread is faster than two fighting over shared cores."""
