"""The fast recipes of issue 25: fmnist-fast (the default, make demo), fmnist-best and cifar10-fast on the airbench
net, end to end on exact-format synthetic CIFAR-10 files (real CIFAR-10 cannot be downloaded here)."""

from __future__ import annotations

import pytest
import torch
from support.official_formats import write_cifar10

from resnetlab.engine import builders
from resnetlab.engine.checkpoint import read_checkpoint
from resnetlab.engine.config import DEFAULT_RECIPE, load_config
from resnetlab.engine.trainer import train
from resnetlab.engine.whitening import normalized_images, patch_whitening_filters

TINY = ["data.val_size=8", "data.batch_size=8", "eval.batch_size=16", "train.iters=3", "train.threads=1",
        "train.quiet=true", "train.device=cpu"]


@pytest.mark.parametrize("recipe", ["fmnist-fast", "fmnist-best", "cifar10-fast"])
def test_the_fast_recipes_train_airbench_with_every_kept_technique(recipe):
    cfg = load_config(recipe)
    assert cfg.model.name == "airbench" and cfg.train.whiten_init and cfg.train.ema_decay > 0
    assert cfg.train.label_smoothing == 0.2 and cfg.data.flip == "alternate" and cfg.eval.tta == "shift"
    assert cfg.schedule.name == "onecycle" and cfg.data.batch_size >= 512


def test_fmnist_fast_is_the_default_and_resnet20_keeps_its_own_recipes():
    assert DEFAULT_RECIPE == "fmnist-fast" and load_config(None).model.name == "airbench"
    for recipe in ("fmnist-resnet20", "he2016-cifar10", "seed000-cifar10"):
        assert load_config(recipe).model.name == "resnet20"


def test_cifar10_fast_trains_on_official_format_files(tmp_path):
    write_cifar10(tmp_path / "data", per_batch=8)  # 40 training images, 8 test images, 3 x 32 x 32
    cfg = load_config("cifar10-fast", [f"data.root={tmp_path / 'data'}", f"train.out_dir={tmp_path / 'run'}", *TINY])
    summary = train(cfg).summary
    assert summary["model"] == "airbench" and summary["data"] == "cifar10" and summary["steps"] == 3
    assert summary["params"] == 295_106 and summary["macs"] == 19_911_362  # the 3-channel net at 32 x 32
    stem = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]["conv1.weight"].contiguous()
    data = builders.build_data(cfg)
    assert stem.shape == (24, 3, 2, 2)
    assert torch.equal(stem, patch_whitening_filters(normalized_images(data.train.images, data.normalization), 2))
