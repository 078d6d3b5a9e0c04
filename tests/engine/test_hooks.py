"""Hooks own their state: the events a caller's hook gets (training mode, the stop it asks for, its checkpoint
entries on save and on resume), through the same path as the config's hooks."""

from __future__ import annotations

import pytest
from support.enginekit import tiny_config

from resnetlab.engine.checkpoint import read_checkpoint
from resnetlab.engine.hooks import Hook, StopAt
from resnetlab.engine.trainer import train
from resnetlab.errors import Interrupted


class Recorder(Hook):
    """Records the training-mode events, counts evaluations (its state), asks to stop at the `stop_at`-th, and keeps
    a note of the step in every checkpoint it saves."""

    name = "recorder"

    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at = stop_at
        self.evals = 0
        self.train_modes: list[tuple[int, bool]] = []
        self.loaded_note: int | None = None

    def on_train_mode(self, run) -> None:
        self.train_modes.append((run.state.step, run.net.training))

    def after_validation(self, run, val) -> str | None:
        self.evals += 1
        return f"enough after {self.evals} evaluations" if self.evals == self.stop_at else None

    def state_dict(self) -> dict:
        return {"evals": self.evals}

    def load_state_dict(self, state: dict) -> None:
        self.evals = state["evals"]

    def on_save_checkpoint(self, run, ckpt: dict) -> None:
        ckpt["recorder_note"] = run.state.step

    def on_load_checkpoint(self, run, ckpt: dict) -> None:
        self.loaded_note = ckpt.pop("recorder_note")


def test_a_hook_sees_training_mode_restores_its_entries_and_ends_the_run_by_asking(tiny_root, tmp_path):
    cfg = tiny_config(tiny_root, tmp_path / "run", train__iters=8, train__eval_every=2)
    first = Recorder()
    with pytest.raises(Interrupted, match="step 3"):
        train(cfg, hooks=[StopAt(3), first])
    assert first.train_modes == [(0, True), (2, True)]  # at the start and after the evaluation at step 2
    saved = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert saved["recorder_note"] == 3 and saved["hooks"]["recorder"] == {"evals": 1}

    resumed = Recorder(stop_at=2)
    result = train(cfg, resume=True, hooks=[resumed])
    assert resumed.loaded_note == 3 and resumed.evals == 2  # its count went on from the checkpoint's
    assert resumed.train_modes == [(3, True), (4, True)]
    assert result.summary["steps"] == 4 and result.summary["stopped_early"] == "enough after 2 evaluations"
    last = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["stop_reason"] == "enough after 2 evaluations" and last["recorder_note"] == 4
