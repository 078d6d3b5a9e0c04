"""An exponential moving average of the weights (`train.ema_decay`), validated, tested and saved in place of them.

The average is `torch.optim.swa_utils.AveragedModel` with an EMA update after every optimizer step. Its
BatchNorm statistics are averaged like the weights (`use_buffers=True`, as timm's ModelEmaV2): statistics
recomputed for the averaged weights would need a pass over the data, and the running statistics of the
trained net belong to other weights. The decay warms up as timm's does, min(decay, (1 + n) / (10 + n)) after n
updates, so a short run is not dominated by its random initialisation.

The averaged model is the one evaluated (`eval_model`, hence `run.eval_net`): validation, model selection
(best.pt) and the test use it. The hook saves it as the checkpoint's `model` (what evaluate, predict and export
load) and the trained weights as `train_model` beside it (`on_save_checkpoint`), and puts both back on resume
(`on_load_checkpoint`); with its update count (`state_dict`) the average resumes exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from resnetlab.engine.hooks import Hook, RunView

WARMUP = 10  # decay after n updates: min(decay, (1 + n) / (WARMUP + n))


class WeightAverage(Hook):
    """EMA of the weights and BatchNorm statistics, updated after every optimizer step.

    Args:
        decay: the EMA decay per step (e.g. 0.999; about 1 / (1 - decay) steps are averaged).
    """

    name = "ema"

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.average: AveragedModel | None = None

    def setup(self, run: RunView) -> None:
        """Start the average from the run's network (on its device)."""
        self.average = AveragedModel(run.net, multi_avg_fn=self._update, use_buffers=True)

    def _update(self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():  # counters (BatchNorm's num_batches_tracked) are copied
            torch._foreach_copy_(averaged, current)
            return
        n = int(num_averaged)
        decay = min(self.decay, (1 + n) / (WARMUP + n))
        torch._foreach_lerp_(averaged, current, 1 - decay)

    def after_step(self, run: RunView, loss: torch.Tensor) -> None:
        assert self.average is not None
        self.average.update_parameters(run.net)

    def eval_model(self, run: RunView) -> nn.Module | None:
        assert self.average is not None
        return self.average.module

    def state_dict(self) -> dict[str, Any]:
        """The update count; the averaged weights themselves are the checkpoint's `model` (on_save_checkpoint)."""
        assert self.average is not None
        return {"n_averaged": self.average.n_averaged.clone().cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self.average is not None
        self.average.n_averaged.copy_(state["n_averaged"])

    def on_save_checkpoint(self, run: RunView, ckpt: dict[str, Any]) -> None:
        """The average becomes the checkpoint's "model" (the evaluated network); the trained weights move to
        "train_model"."""
        assert self.average is not None
        trained, ckpt["model"] = ckpt["model"], self.average.module.state_dict()
        ckpt["train_model"] = trained

    def on_load_checkpoint(self, run: RunView, ckpt: dict[str, Any]) -> None:
        """The average from "model"; the trained weights go back to "model", where the loop restores `run.net` from."""
        assert self.average is not None
        self.average.module.load_state_dict(ckpt["model"])
        ckpt["model"] = ckpt.pop("train_model")
