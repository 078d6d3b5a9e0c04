"""Fixtures for the DDP tests: the engine tests' tiny data set, and a one-process reference run to compare with.

The helpers live in tests/support (ddpkit, enginekit); the tiny data set `tiny_root` is in tests/conftest.py.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.ddpkit import DDP_SETTINGS, FIRST_EVAL_STEP, STOP_STEP, float64, read_jsonl
from support.enginekit import tiny_config


@dataclass
class Reference:
    """One process with the whole batch: last.pt after FIRST_EVAL_STEP and STOP_STEP steps, and the finished run."""

    run_dir: Path
    at_first_eval: dict  # the checkpoint dict written when it stopped after FIRST_EVAL_STEP steps
    at_stop: dict  # the checkpoint dict written when it stopped after STOP_STEP steps
    final: dict  # checkpoints/last.pt at the end
    rows: list[dict]  # metrics.jsonl
    summary: dict


@pytest.fixture(scope="session")
def reference(tiny_root, tmp_path_factory) -> Reference:
    """DDP_SETTINGS on one process in float64, stopped by SIGTERM after FIRST_EVAL_STEP and after STOP_STEP steps,
    resumed each time (one process resumes bit-identically: tests/engine/test_resume.py)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from resnetlab.engine.checkpoint import read_checkpoint
    from resnetlab.engine.trainer import train
    from resnetlab.errors import Interrupted

    out = tmp_path_factory.mktemp("reference") / "run"
    steps = [0]

    def stop_after(optimizer, args, kwargs) -> None:
        steps[0] += 1
        if steps[0] in (FIRST_EVAL_STEP, STOP_STEP):
            os.kill(os.getpid(), signal.SIGTERM)  # one process checks for a stop after every step

    handle = register_optimizer_step_post_hook(stop_after)
    stops = []
    try:
        with float64():
            for resume in (False, True):
                with pytest.raises(Interrupted):
                    train(tiny_config(tiny_root, out, **DDP_SETTINGS), resume=resume)
                stops.append(read_checkpoint(out / "checkpoints" / "last.pt"))
            handle.remove()
            result = train(tiny_config(tiny_root, out, **DDP_SETTINGS), resume=True)
    finally:
        handle.remove()
    assert [s["step"] for s in stops] == [FIRST_EVAL_STEP, STOP_STEP]
    return Reference(run_dir=out, at_first_eval=stops[0], at_stop=stops[1],
                     final=read_checkpoint(out / "checkpoints" / "last.pt"), rows=read_jsonl(out / "metrics.jsonl"),
                     summary=result.summary)
