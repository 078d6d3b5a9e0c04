"""Gradient flow: the gradient norm of every residual stage (or block), logged into metrics.jsonl.

The tutorials explain the shortcut by the gradient it carries back to the first layers; `train.grad_norms`
makes that visible. Every `train.log_every` steps the metrics row gets `grad_norm`: {group: L2 norm of the
gradients of that group's parameters} at that step (after the backward pass and before clipping and the
optimizer step; averaged over the processes under torchrun, unscaled under fp16 loss scaling).

Groups, in the order of the network: `stem` (the layers before the first stage: conv1, bn1), one per stage
(`layer1`, `layer2`, ...; with `block`, one per residual block: `layer1.0`, `layer1.1`, ...), and `head` (what
follows the last stage: fc, and a pre-activation net's final BN). Stages are the network's `nn.Sequential`
children, so every net of the zoo (CIFAR, pre-activation, ImageNet, plain) is grouped alike.
`reports/gradflow.py` draws them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from resnetlab.engine.config import rows_every
from resnetlab.engine.hooks import Hook, RunView

GRAD_NORM_KEY = "grad_norm"


def grad_groups(net: nn.Module, level: str) -> list[tuple[str, list[nn.Parameter]]]:
    """(name, parameters) of every group for `level` "stage" or "block", in the order of the network."""
    groups: list[tuple[str, list[nn.Parameter]]] = []
    pending: list[nn.Parameter] = []
    seen_stage = False
    for name, child in net.named_children():
        if isinstance(child, nn.Sequential):
            if pending:
                groups.append(("stem" if not seen_stage else f"between.{name}", pending))
                pending = []
            seen_stage = True
            parts = list(child.named_children()) if level == "block" else [("", child)]
            for sub, module in parts:
                params = list(module.parameters())
                if params:
                    groups.append((f"{name}.{sub}" if sub else name, params))
        else:
            pending += list(child.parameters())
    if pending:
        groups.append(("head" if seen_stage else "all", pending))
    return groups


class GradNorms(Hook):
    """Measure each group's gradient norm at the steps that end with a metrics row (train.grad_norms).

    Measured at the steps that end with a metrics row (train.log_every, resolved for the run's length), and put
    into that step's row.

    Args:
        level: "stage" or "block".
    """

    name = GRAD_NORM_KEY

    def __init__(self, level: str) -> None:
        self.level = level
        self.every = 1
        self.groups: list[tuple[str, list[nn.Parameter]]] = []
        self.latest: torch.Tensor | None = None  # (groups,) norms on the device, until the row takes them

    def setup(self, run: RunView) -> None:
        self.groups = grad_groups(run.net, self.level)
        self.every = rows_every(run.cfg.train.log_every, run.total_iters)

    def after_backward(self, run: RunView) -> None:
        if (run.state.step + 1) % self.every:  # the row of step s comes after the step that makes state.step s
            return
        norms = []
        for _, params in self.groups:
            grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
            norms.append(torch.stack(grads).norm() if grads else torch.zeros((), device=run.device))
        scale = run.scaler.get_scale() if run.scaler.is_enabled() else 1.0
        self.latest = torch.stack(norms) / scale

    def metrics_row(self, run: RunView) -> dict[str, Any]:
        if self.latest is None:
            return {}
        values, self.latest = self.latest.tolist(), None
        return {GRAD_NORM_KEY: {name: value for (name, _), value in zip(self.groups, values, strict=True)}}
