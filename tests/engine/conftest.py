"""Fixtures for the engine tests: one shared finished run (the tiny data set `tiny_root` is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.enginekit import tiny_config


@pytest.fixture(scope="session")
def base_run(tiny_root, tmp_path_factory) -> Path:
    """One finished tiny run (3 epochs of 12 steps, an evaluation per epoch, top-2 checkpoints), shared."""
    from resnetlab.engine.trainer import train

    out = tmp_path_factory.mktemp("runs") / "base"
    train(tiny_config(tiny_root, out, train__epochs=3, train__top_k=2))
    return out
