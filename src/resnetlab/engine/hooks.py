"""Hooks: techniques attached to the one training path (fastai's callbacks, in small).

A `Hook` may change a batch before the step, see each step's loss, offer another network to validate and test
(e.g. a weight average), and keep state that every checkpoint saves and restores. `run.config_hooks(cfg)` is the
list a config turns on; `train(cfg, hooks=...)` adds the caller's.
"""

from __future__ import annotations

import signal
from typing import Any

import torch
from torch import nn


class Hook:
    """A technique attached to the training path; every method is optional (the defaults do nothing).

    `run` is the `resnetlab.engine.run.Run` being trained. Hooks run in the order given, on every process.
    Their `state_dict()` goes into checkpoints (plain values and tensors only) and comes back through
    `load_state_dict()` on resume, keyed by `name`.
    """

    name = "hook"

    def setup(self, run: Any) -> None:
        """Called once the run is built, before a checkpoint is restored into it."""

    def on_batch(self, run: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch the step trains on (e.g. mixed images and soft targets); called before the forward pass."""
        return x, y

    def after_backward(self, run: Any) -> None:
        """Called once the gradients of the step are summed (over micro-batches and processes), before gradient
        clipping and the optimizer step (e.g. to drop the gradients of frozen layers)."""

    def after_step(self, run: Any, loss: torch.Tensor) -> None:
        """Called after each optimizer step with its loss (a device tensor: `.item()` waits for the device)."""

    def after_validation(self, run: Any, val: dict[str, Any] | None) -> None:
        """Called at each evaluation point with the validation metrics (None without a validation split), before
        the checkpoints are saved; may set `run.stop_reason` to end the run after this evaluation."""

    def metrics_row(self, run: Any) -> dict[str, Any]:
        """Entries to add to the metrics row being written (every `train.log_every` steps and at evaluations)."""
        return {}

    def eval_model(self, run: Any) -> nn.Module | None:
        """The network to validate, select and test instead of `run.net` (e.g. a weight average), or None."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to resume this hook exactly."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`."""


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

    def after_step(self, run: Any, loss: torch.Tensor) -> None:
        if run.state.step == self.step and run.stop.signum is None:
            run.stop.signum = int(signal.SIGINT)
