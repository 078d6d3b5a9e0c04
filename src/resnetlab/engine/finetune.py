"""Fine-tuning in two phases (fastai's `fine_tune`): the classifier alone first, then every layer.

For the first train.freeze_epochs epochs only the classifier (`fc`) learns: the backbone's parameters get no
gradient (so no update, momentum or weight decay) and its BatchNorm layers run in eval mode, keeping the running
statistics the weights came with; a fresh classifier on top of pretrained features would otherwise send large,
random gradients into them. Then every layer trains; with optim.backbone_lr_scale < 1 the backbone keeps a fraction
of the classifier's lr (param_groups.py, LRSchedule.apply).

The phase is a function of the step alone, so resuming in either phase, or across the switch, is exact. In one
process the backbone is frozen with `requires_grad=False` (its backward pass is skipped); under DDP, whose
gradient hooks are fixed when the model is wrapped, every parameter keeps `requires_grad` and the backbone's
all-reduced gradients are dropped before the step, which gives the same update.

SGD creates a parameter's momentum buffer at its first gradient; CUDA's fused SGD refuses a step where some
parameters have a buffer and others not, which is the case when the backbone joins. The backbone's missing buffers
are therefore created as zeros when it unfreezes: with SGD's dampening 0, a zero buffer gives the first step exactly
the update of a buffer cloned from the gradient (momentum x 0 + gradient), so the numbers do not change.
"""

from __future__ import annotations

from typing import Any

import torch

from resnetlab.engine.hooks import Hook, RunView
from resnetlab.engine.param_groups import backbone_batchnorms, split_parameters


class FineTune(Hook):
    """Freeze the backbone (parameters and BatchNorm statistics) for the first `freeze_epochs` epochs.

    The phase is set whenever the loop puts the model in training mode (`on_train_mode`: at the start of every epoch,
    resumed or not, and after every evaluation) and once at the switch (`after_step` of the last frozen step).

    Args:
        freeze_epochs: epochs (may be fractional) during which only the classifier trains.
    """

    name = "finetune"

    def __init__(self, freeze_epochs: float) -> None:
        self.freeze_epochs = freeze_epochs
        self.trainable: bool | None = None  # the backbone's requires_grad as last set (None: not yet)
        self._backbone: tuple[list[torch.nn.Parameter], list[torch.nn.Module]] | None = None
        self._buffers_ready = False  # the backbone's SGD momentum buffers exist (after the frozen phase)

    def backbone(self, run: RunView) -> tuple[list[torch.nn.Parameter], list[torch.nn.Module]]:
        """The backbone's parameters and BatchNorm layers (everything but the classifier)."""
        if self._backbone is None:
            self._backbone = split_parameters(run.net)[1], backbone_batchnorms(run.net)
        return self._backbone

    def freeze_iters(self, run: RunView) -> int:
        """Iterations of the frozen phase."""
        return round(self.freeze_epochs * run.steps_per_epoch)

    def frozen(self, run: RunView) -> bool:
        """Whether the step about to run belongs to the frozen phase."""
        return run.state.step < self.freeze_iters(run)

    def on_train_mode(self, run: RunView) -> None:
        self._set_phase(run)

    def after_step(self, run: RunView, loss: torch.Tensor) -> None:
        if run.state.step == self.freeze_iters(run):  # the frozen phase has just ended: the switch
            self._set_phase(run)

    def after_backward(self, run: RunView) -> None:
        params = self.backbone(run)[0]
        if self.frozen(run):
            for p in params:
                p.grad = None
        elif not self._buffers_ready:  # the first step of the backbone, before its update
            _zero_momentum_buffers(run.optimizer, params)
            self._buffers_ready = True

    def _set_phase(self, run: RunView) -> None:
        """The backbone as the next step's phase wants it: its parameters' requires_grad, its BatchNorm's mode."""
        frozen = self.frozen(run)
        trainable = run.env.distributed or not frozen  # DDP: gradients are dropped in after_backward instead
        params, batchnorms = self.backbone(run)
        if trainable != self.trainable:
            for p in params:
                p.requires_grad_(trainable)
            self.trainable = trainable
        keep_statistics = frozen or run.cfg.train.freeze_bn
        for bn in batchnorms:
            bn.train(not keep_statistics)

    def state_dict(self) -> dict[str, Any]:
        return {"freeze_epochs": self.freeze_epochs}  # the phase follows from the step; this is for the record


def _zero_momentum_buffers(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> None:
    """Give `params` a zero SGD momentum buffer where they have none (see the module docstring)."""
    if not isinstance(optimizer, torch.optim.SGD):
        return
    wanted = {id(p) for p in params}
    for group in optimizer.param_groups:
        if group["momentum"] == 0 or group.get("dampening", 0) != 0:
            continue
        for p in group["params"]:
            if id(p) in wanted and optimizer.state[p].get("momentum_buffer") is None:
                optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
