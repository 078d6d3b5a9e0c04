"""Learning-rate schedules as a function of the iteration, with warm-up; the state is plain numbers.

The lr used by iteration `i` (0-based: the (i+1)-th optimizer step) is `LRSchedule.lr_at(i)`. Every
schedule except `plateau` is a pure function of `i`, so resuming needs only the step count; `plateau`
adds three numbers (its current scale, the best validation loss, evaluations without improvement) that
`state_dict()` returns. No lambdas or closures end up in a checkpoint.

Milestones are absolute iterations (the paper: "divide it by 10 at 32k and 48k iterations"); warm-up
replaces the first `warmup_iters` iterations and does not shift the schedule behind it.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from resnetlab.engine.config import ScheduleConfig


def resolve_iters(value: float, total_iters: int) -> int:
    """An iteration count from a config value: a number in (0, 1) is a fraction of `total_iters`."""
    if 0 < value < 1:
        return max(1, round(value * total_iters))
    return int(value)


class LRSchedule:
    """The learning rate of every iteration for one run.

    Args:
        cfg: the `schedule` section of the config.
        base_lr: the peak learning rate (optim.lr after any distributed scaling).
        total_iters: the number of iterations of the whole run.
    """

    def __init__(self, cfg: ScheduleConfig, base_lr: float, total_iters: int) -> None:
        self.cfg = cfg
        self.base_lr = base_lr
        self.total_iters = max(1, total_iters)
        self.milestones = [resolve_iters(m, self.total_iters) for m in cfg.milestones]
        self.step_size = max(1, resolve_iters(cfg.step_size, self.total_iters))
        self.warmup_iters = resolve_iters(cfg.warmup_iters, self.total_iters)
        # plateau state (ReduceLROnPlateau in "min" mode on the validation loss, counted in evaluations)
        self.plateau_scale = 1.0
        self.plateau_best = math.inf
        self.plateau_bad_evals = 0

    # -------------------------------------------------------------------------------------- the lr

    def lr_at(self, step: int) -> float:
        """The learning rate for iteration `step` (0-based)."""
        lr = self._schedule_lr(step)
        if step < self.warmup_iters:
            if self.cfg.warmup_mode == "constant":
                return self.cfg.warmup_lr
            return self.cfg.warmup_lr + (lr - self.cfg.warmup_lr) * step / self.warmup_iters
        return lr

    def _schedule_lr(self, step: int) -> float:
        c, base, total = self.cfg, self.base_lr, self.total_iters
        name = c.name
        if name == "multistep":
            return base * c.gamma ** sum(step >= m for m in self.milestones)
        if name == "step":
            return base * c.gamma ** (step // self.step_size)
        if name == "cosine":
            progress = min(step / total, 1.0)
            return c.min_lr + (base - c.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        if name == "onecycle":
            return self._onecycle_lr(step)
        if name == "plateau":
            return max(base * self.plateau_scale, c.min_lr)
        return base  # constant

    def _onecycle_lr(self, step: int) -> float:
        # One-cycle policy (Smith & Topin 2017, as torch's OneCycleLR with cosine annealing): rise from
        # lr/div_factor to lr over pct_start of the run, then fall to lr/(div_factor*final_div_factor).
        c = self.cfg
        start = self.base_lr / c.div_factor
        end = start / c.final_div_factor
        rise = max(1, round(c.pct_start * self.total_iters))
        if step < rise:
            return _cos_anneal(start, self.base_lr, step / rise)
        fall = max(1, self.total_iters - rise)
        return _cos_anneal(self.base_lr, end, min((step - rise) / fall, 1.0))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every parameter group's lr for iteration `step`; returns that lr.

        A group with an `lr_scale` (the backbone under optim.backbone_lr_scale) gets that fraction of it, so the
        schedule keeps every group's ratio to the classifier's lr.
        """
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    # ----------------------------------------------------------------------------------- plateau

    def observe(self, val_loss: float | None) -> None:
        """Feed one validation loss (called at each evaluation); only `plateau` reacts to it."""
        if self.cfg.name != "plateau" or val_loss is None or not math.isfinite(val_loss):
            return
        if val_loss < self.plateau_best * (1 - self.cfg.threshold):
            self.plateau_best = val_loss
            self.plateau_bad_evals = 0
            return
        self.plateau_bad_evals += 1
        if self.plateau_bad_evals > self.cfg.patience:
            self.plateau_scale *= self.cfg.gamma
            self.plateau_bad_evals = 0

    # ------------------------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers: everything `lr_at` depends on besides the config and the step."""
        return {"plateau_scale": self.plateau_scale, "plateau_best": self.plateau_best,
                "plateau_bad_evals": self.plateau_bad_evals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict()` returned."""
        self.plateau_scale = float(state["plateau_scale"])
        self.plateau_best = float(state["plateau_best"])
        self.plateau_bad_evals = int(state["plateau_bad_evals"])


def _cos_anneal(start: float, end: float, fraction: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * fraction))
