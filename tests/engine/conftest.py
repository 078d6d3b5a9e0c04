"""Fixtures for the engine tests: shared finished runs (the tiny data set `tiny_root` is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.enginekit import cli_args, tiny_config
from support.faultkit import FAULT_SETTINGS, run_worker


@pytest.fixture(scope="session")
def base_run(tiny_root, tmp_path_factory) -> Path:
    """One finished tiny run (3 epochs of 12 steps, an evaluation per epoch, top-2 checkpoints), shared."""
    from resnetlab.engine.trainer import train

    out = tmp_path_factory.mktemp("runs") / "base"
    train(tiny_config(tiny_root, out, train__epochs=3, train__top_k=2))
    return out


@pytest.fixture(scope="session")
def straight(tiny_root, tmp_path_factory) -> Path:
    """The uninterrupted run (24 steps, checkpoints every 5, top-5 kept) every faulty one must end equal to
    (tests/engine/test_faults.py, test_data_safety.py), trained by a worker process as the faulty ones are."""
    out = tmp_path_factory.mktemp("straight") / "run"
    done = run_worker("none", 0, cli_args(tiny_root, out, **FAULT_SETTINGS, train__top_k=5))
    assert done.returncode == 0, done.stderr[-2000:]
    return out
