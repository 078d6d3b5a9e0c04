"""Hooks: optional techniques attached to the one training path (fastai's callbacks, Lightning's, in small).

What is a hook and what stays in the loop (docs/internals.md, "Hooks"): the loop holds what every step does the
same way (the step's arithmetic: autocast, loss, accumulation, freeze_bn, clipping, the update) and what every run
has (metrics rows, the NaN check, stop signals, the files: best, last and top-k checkpoints). A hook is an optional
technique that acts only at some moments of the run or keeps state of its own that a resume must restore, or
replaces the network that is evaluated. It sees the run through `RunView`, owns its checkpoint entries, writes no
file, and asks the loop to stop instead of stopping it.

`techniques.config_hooks(cfg)` is the list a config turns on; `train(cfg, hooks=...)` adds the caller's.
"""

from __future__ import annotations

import signal
from typing import Any, Protocol

import torch
from torch import nn

from resnetlab.engine.builders import Datasets
from resnetlab.engine.config import Config
from resnetlab.engine.distributed import DistEnv
from resnetlab.engine.runstate import TrainState
from resnetlab.engine.runtime import StopSignals


class RunView(Protocol):
    """What a hook sees of the run being trained (`resnetlab.engine.run.Run` is one)."""

    cfg: Config
    env: DistEnv
    device: torch.device
    data: Datasets
    net: nn.Module  # the network whose weights train (unwrapped: not in DDP, not compiled)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    state: TrainState  # step, lr, ...: read them; the loop writes them
    stop: StopSignals
    total_iters: int
    steps_per_epoch: int


class Hook:
    """A technique attached to the training path; every method is optional (the defaults do nothing).

    Hooks run in the order given, on every process. Events, in the order of a run: `setup`, then (resuming)
    `on_load_checkpoint`/`load_state_dict`; `on_train_mode` whenever the loop puts the model in training mode;
    per step `after_backward`, `after_step`; `metrics_row` at every metrics row; at evaluations `after_validation`,
    then `state_dict`/`on_save_checkpoint` as the checkpoints are written.
    """

    name = "hook"  # the key of `state_dict()` in a checkpoint's "hooks"

    def setup(self, run: RunView) -> None:
        """Called once the run is built, before a checkpoint is restored into it."""

    def on_train_mode(self, run: RunView) -> None:
        """The loop has just put the model in training mode (`trainer.set_train_mode`: at the start of every epoch,
        after every evaluation, and before lr-find's steps); set the modes the technique needs (e.g. BatchNorm
        layers kept in eval mode)."""

    def after_backward(self, run: RunView) -> None:
        """Called once the gradients of the step are summed (over micro-batches and processes), before gradient
        clipping and the optimizer step (e.g. to drop the gradients of frozen layers)."""

    def after_step(self, run: RunView, loss: torch.Tensor) -> None:
        """Called after each optimizer step (`run.state.step` counts it) with its loss (a device tensor: `.item()`
        waits for the device)."""

    def after_validation(self, run: RunView, val: dict[str, Any] | None) -> str | None:
        """Called at each evaluation point with the validation metrics (None without a validation split), before
        the checkpoints are saved. Returns why the run should end after this evaluation (e.g. early stopping), or
        None; the loop logs the reason, records it (checkpoints, summary.json's `stopped_early`) and stops."""
        return None

    def metrics_row(self, run: RunView) -> dict[str, Any]:
        """Entries to add to the metrics row being written (every `train.log_every` steps and at evaluations)."""
        return {}

    def eval_model(self, run: RunView) -> nn.Module | None:
        """The network to validate, select and test instead of `run.net` (e.g. a weight average), or None. A hook
        that offers one also saves it as the checkpoint's "model" (`on_save_checkpoint`): what best.pt is tested
        with, and what evaluate, predict and export load."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """The hook's own checkpoint entry (`ckpt["hooks"][name]`; plain values and tensors only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` on resume."""

    def on_save_checkpoint(self, run: RunView, ckpt: dict[str, Any]) -> None:
        """Edit the checkpoint the loop built, in place, for entries other than the hook's own (e.g. the weight
        average saves itself as "model" and the trained weights as "train_model")."""

    def on_load_checkpoint(self, run: RunView, ckpt: dict[str, Any]) -> None:
        """Undo `on_save_checkpoint` on a copy of the checkpoint, in place, before the loop restores the run from it
        (hooks are called in reverse order); restore what the hook took from it."""


class StopAt(Hook):
    """Stop the run after `step` optimizer steps exactly as Ctrl-C (SIGINT) does: checkpoints/last.pt is saved and
    `resnetlab.errors.Interrupted` is raised; `train(cfg, resume=True)` then finishes the run.

    For trying out (and testing) exact resume without timing a keystroke. Nothing of it is saved: a resumed run
    does not stop again unless it is given the hook again with a later step.
    """

    name = "stop_at"

    def __init__(self, step: int) -> None:
        if step < 1:
            raise ValueError(f"StopAt needs a step >= 1; got {step}")
        self.step = step

    def after_step(self, run: RunView, loss: torch.Tensor) -> None:
        if run.state.step == self.step and run.stop.signum is None:
            run.stop.signum = int(signal.SIGINT)
