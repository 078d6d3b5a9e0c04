"""The hooks a config asks for: the techniques that attach to the one training path through `Hook`
(`engine/hooks.py`); `build_run` puts them first, before the caller's."""

from __future__ import annotations

from resnetlab.engine.averaging import WeightAverage
from resnetlab.engine.config import Config
from resnetlab.engine.early_stopping import EarlyStopping
from resnetlab.engine.finetune import FineTune
from resnetlab.engine.gradflow import GradNorms
from resnetlab.engine.hooks import Hook
from resnetlab.engine.whitening import PatchWhitening


def config_hooks(cfg: Config) -> list[Hook]:
    """The patch-whitening stem (train.whiten_init: first, so that a weight average starts from it), the weight
    average (train.ema_decay), fine-tuning's frozen phase (train.freeze_epochs), early stopping (train.patience) and
    the gradient norms (train.grad_norms), when set."""
    hooks: list[Hook] = [PatchWhitening()] if cfg.train.whiten_init else []
    if cfg.train.ema_decay > 0:
        hooks.append(WeightAverage(cfg.train.ema_decay))
    if cfg.train.freeze_epochs > 0:
        hooks.append(FineTune(cfg.train.freeze_epochs))
    if cfg.train.patience > 0:
        hooks.append(EarlyStopping(cfg.train.patience))
    if cfg.train.grad_norms != "none":
        hooks.append(GradNorms(cfg.train.grad_norms))
    return hooks
