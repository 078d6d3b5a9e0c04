"""Gradient accumulation (train.accumulate): K micro-batches per optimizer step, the large batch's step."""

from __future__ import annotations

import pytest
import torch
from support.ddpkit import assert_same_weights, float64
from support.enginekit import cli_args, read_rows, tiny_config
from torch import nn

from resnetlab.engine.accumulate import micro_batches
from resnetlab.engine.checkpoint import read_checkpoint
from resnetlab.engine.trainer import train

pytestmark = pytest.mark.numeric  # also run with AVX2 kernels only by .ci/run (issue 11)


def _last(run_dir) -> dict:
    return read_checkpoint(run_dir / "checkpoints" / "last.pt")


def test_micro_batches_cover_the_batch_with_their_shares():
    x, y = torch.arange(10.0).reshape(10, 1), torch.arange(10)
    parts = micro_batches(x, y, 4)
    assert [len(p[0]) for p in parts] == [3, 3, 2, 2] and sum(p[2] for p in parts) == pytest.approx(1.0)
    assert torch.equal(torch.cat([p[1] for p in parts]), y)
    assert [len(p[0]) for p in micro_batches(x[:2], y[:2], 4)] == [1, 1]  # a short last batch: no empty part
    assert micro_batches(x, y, 1)[0][0] is x


def test_accumulation_steps_on_micro_batches(tiny_root, tmp_path):
    sizes = []

    def record(module, args):
        if module.training:
            sizes.append(args[0].shape[0])

    handle = nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: record(module, args) if isinstance(module, nn.Linear) else None)
    try:
        train(tiny_config(tiny_root, tmp_path / "run", train__accumulate=4, train__iters=2))
    finally:
        handle.remove()
    assert sizes == [8] * 8  # batch 32 in 4 micro-batches of 8, twice
    assert _last(tmp_path / "run")["step"] == 2  # one optimizer step per batch


def test_with_frozen_batchnorm_accumulation_gives_the_large_batchs_weights(tiny_root, tmp_path):
    """float64 (ddpkit's docstring says why): what is left to compare is the sum of the micro-batches' gradients."""
    settings = {"train__freeze_bn": True, "train__iters": 4, "train__eval_every": 2, "data__crop_padding": 2,
                "data__flip": True, "optim__nesterov": True}
    with float64():
        train(tiny_config(tiny_root, tmp_path / "one", **settings))
        train(tiny_config(tiny_root, tmp_path / "four", train__accumulate=4, **settings))
        train(tiny_config(tiny_root, tmp_path / "moving", train__accumulate=4, **{**settings,
                                                                                   "train__freeze_bn": False}))
    one, four = _last(tmp_path / "one"), _last(tmp_path / "four")
    assert_same_weights(four["model"], one["model"], rtol=1e-10)  # the brief asked for 1e-5; float64 gives ~1e-15
    for a, b in zip(read_rows(tmp_path / "four"), read_rows(tmp_path / "one"), strict=True):
        assert (a["train_acc"], a["val_acc"]) == (b["train_acc"], b["val_acc"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-10)  # metrics over every micro-batch
    # BatchNorm in training mode normalizes each micro-batch with its own statistics: another result
    moving = _last(tmp_path / "moving")["model"]
    assert not torch.allclose(moving["layer1.0.conv1.weight"], one["model"]["layer1.0.conv1.weight"], rtol=1e-6)


@pytest.mark.parametrize(("setting", "message"), [
    ("train.accumulate=0", "train.accumulate must be from 1 to data.batch_size (32)"),
    ("train.accumulate=33", "train.accumulate must be from 1 to data.batch_size (32)"),
    ("train.freeze_epochs=-1", "train.freeze_epochs must be >= 0"),
    ("optim.backbone_lr_scale=0", "optim.backbone_lr_scale must be positive"),
    ("train.patience=-2", "train.patience must be >= 0"),
    ("train.patience=3", "train.patience needs a validation split"),
])
def test_bad_values_exit_2_with_one_line(tiny_root, tmp_path, run_cli, setting, message):
    args = cli_args(tiny_root, tmp_path / "run", data__val_size=0)
    code, _, err = run_cli(*args, "--set", setting)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
