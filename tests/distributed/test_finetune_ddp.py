"""Fine-tuning's frozen phase, discriminative lr and gradient accumulation under torchrun (two CPU processes).

Under DDP the frozen backbone keeps requires_grad (DDP's gradient hooks are fixed when it wraps the model) and its
all-reduced gradients are dropped before the step; the micro-batches of train.accumulate all-reduce once, on the
last one. Two processes must train the weights one process trains (float64, BatchNorm frozen: ddpkit's docstring).
"""

from __future__ import annotations

import pytest
from support.ddpkit import assert_same_weights, float64, torchrun, train_argv
from support.enginekit import tiny_config

from resnetlab.engine.checkpoint import read_checkpoint
from resnetlab.engine.trainer import train

pytestmark = [pytest.mark.slow, pytest.mark.numeric]

# 12 steps an epoch: 3 frozen steps, then every layer with the backbone at 0.1x; 2 micro-batches per step (8 images
# on each of two processes, 16 on one).
TECHNIQUES = {"train__freeze_epochs": 0.25, "optim__backbone_lr_scale": 0.1, "train__accumulate": 2,
              "train__iters": 8}


def test_two_processes_fine_tune_with_accumulation_as_one_does(tiny_root, tmp_path):
    launch = torchrun(2, train_argv(tiny_root, tmp_path / "two", **TECHNIQUES))
    assert launch.returncode == 0, launch.stderr[-4000:]
    with float64():
        from support.ddpkit import DDP_SETTINGS

        train(tiny_config(tiny_root, tmp_path / "one", **{**DDP_SETTINGS, **TECHNIQUES}))
    two, one = (read_checkpoint(tmp_path / name / "checkpoints" / "last.pt") for name in ("two", "one"))
    assert two["world_size"] == 2 and two["step"] == one["step"] == 8
    assert_same_weights(two["model"], one["model"])
