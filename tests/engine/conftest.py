"""Fixtures for the engine tests: a tiny separable data set and one shared finished run (helpers: enginekit)."""

from __future__ import annotations

from pathlib import Path

import pytest
from enginekit import make_mnist_root, tiny_config


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A data root with a small separable 4-class 'mnist' (480 train, 160 test images of 12x12)."""
    return make_mnist_root(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def base_run(tiny_root, tmp_path_factory) -> Path:
    """One finished tiny run (3 epochs of 12 steps, an evaluation per epoch, top-2 checkpoints), shared."""
    from resnetlab.engine.trainer import train

    out = tmp_path_factory.mktemp("runs") / "base"
    train(tiny_config(tiny_root, out, train__epochs=3, train__top_k=2))
    return out
