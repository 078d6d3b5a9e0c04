"""The techniques of the fast recipes (issue 25): patch-whitening initialisation from the training data and the
BatchNorm-bias lr multiplier. Each test fails when its option is ignored; a run with all of them resumes exactly."""

from __future__ import annotations

import pytest
import torch
from support.enginekit import tiny_config, train_until_stopped

from resnetlab.engine import builders
from resnetlab.engine.checkpoint import read_checkpoint
from resnetlab.engine.config import load_config
from resnetlab.engine.schedule import LRSchedule
from resnetlab.engine.trainer import train
from resnetlab.engine.whitening import WHITEN_EPS, normalized_images, patch_whitening_filters
from resnetlab.errors import UserError
from resnetlab.models import create_model

pytestmark = pytest.mark.numeric  # also run with AVX2 kernels only by .ci/run (issue 11)

AIRBENCH = {"model__name": "airbench", "train__iters": 12}


def test_whitening_filters_decorrelate_the_patches():
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(64, 2, 9, 9, generator=gen)
    images = torch.cat([base, base[:, :1] * 0.5 + 0.1 * torch.randn(64, 1, 9, 9, generator=gen)], dim=1)  # correlated
    filters = patch_whitening_filters(images, 2)
    assert filters.shape == (24, 3, 2, 2) and torch.equal(filters[12:], -filters[:12])
    out = torch.nn.functional.conv2d(images.double(), filters[:12].double())  # (64, 12, 8, 8)
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = flat.T @ flat / flat.shape[0]
    eigenvalues = torch.linalg.eigvalsh((lambda p: p.T @ p / p.shape[0])(
        images.double().unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12))).flip(0)
    torch.testing.assert_close(covariance, torch.diag(eigenvalues / (eigenvalues + WHITEN_EPS)), atol=1e-6, rtol=1e-6)


def test_whiten_init_sets_the_stem_from_the_training_images_and_freezes_it(tiny_root, tmp_path):
    run = train(tiny_config(tiny_root, tmp_path / "white", train__whiten_init=True, **AIRBENCH))
    ckpt = read_checkpoint(run.run_dir / "checkpoints" / "last.pt")
    cfg = tiny_config(tiny_root, None, **AIRBENCH)
    data = builders.build_data(cfg)
    expected = patch_whitening_filters(normalized_images(data.train.images[:5000], data.normalization), 2)
    assert torch.equal(ckpt["model"]["conv1.weight"].contiguous(), expected)  # set from the data, then not trained
    assert ckpt["optimizer"]["state"].keys() and 0 not in ckpt["optimizer"]["state"]  # no momentum for a frozen stem
    plain = read_checkpoint(train(tiny_config(tiny_root, tmp_path / "plain", **AIRBENCH)).run_dir / "checkpoints" /
                            "last.pt")
    assert not torch.allclose(plain["model"]["conv1.weight"].contiguous(), expected)


def test_whiten_init_leaves_a_model_without_a_whitening_stem_alone(tiny_root, tmp_path):
    settings = {"train__iters": 2}
    white = train(tiny_config(tiny_root, tmp_path / "a", train__whiten_init=True, **settings)).summary
    plain = train(tiny_config(tiny_root, tmp_path / "b", **settings)).summary
    assert white["test_loss_final"] == plain["test_loss_final"]  # resnet20: nothing to whiten, the same run


def test_bn_bias_lr_scale_multiplies_the_step_of_the_batchnorm_biases_only(tiny_root, tmp_path):
    one_step = {"train__iters": 1, "optim__momentum": 0.0, "optim__weight_decay": 0.0, "optim__nesterov": False,
                "schedule__name": "constant", "model__name": "airbench"}
    steps = {}
    for scale in (1.0, 4.0):
        run = train(tiny_config(tiny_root, tmp_path / f"s{scale}", optim__bn_bias_lr_scale=scale, **one_step))
        steps[scale] = read_checkpoint(run.run_dir / "checkpoints" / "last.pt")["model"]
    torch.manual_seed(0)  # what the runs built: seed 0, and the tiny set has 10 classes
    initial = create_model("airbench", num_classes=10, in_chans=1).state_dict()
    for key in ("layer1.bn1.bias", "layer3.bn2.bias"):
        torch.testing.assert_close(steps[4.0][key] - initial[key], 4 * (steps[1.0][key] - initial[key]))
    for key in ("layer1.bn1.weight", "layer2.conv1.weight", "fc.bias"):
        torch.testing.assert_close(steps[4.0][key], steps[1.0][key])


def test_bn_bias_groups_keep_weight_decay_and_combine_with_the_backbone_scale():
    cfg = load_config("fmnist-resnet20", ["optim.bn_bias_lr_scale=8", "optim.backbone_lr_scale=0.5",
                                          "optim.no_weight_decay_bn_bias=true"])
    net = create_model("resnet20", num_classes=10, in_chans=1)
    optimizer = builders.build_optimizer(net, cfg.optim, 0.1, torch.device("cpu"))
    biases = {id(m.bias) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    scales = {(id(p) in biases, g["lr_scale"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    assert scales == {(False, 0.5, 5e-4), (False, 0.5, 0.0), (True, 4.0, 0.0), (False, 1.0, 5e-4), (False, 1.0, 0.0)}
    lr = LRSchedule(cfg.schedule, 0.1, 10).apply(optimizer, 0)
    assert sorted(round(g["lr"] / lr, 6) for g in optimizer.param_groups) == [0.5, 0.5, 1.0, 1.0, 4.0]


def test_bad_bn_bias_lr_scale_is_a_user_error():
    with pytest.raises(UserError, match="optim.bn_bias_lr_scale must be positive"):
        load_config("fmnist-fast", ["optim.bn_bias_lr_scale=0"])


def test_a_run_with_every_fast_technique_resumes_bit_exactly(tiny_root, tmp_path):
    settings = {**AIRBENCH, "train__iters": 16, "train__eval_every": 8, "train__whiten_init": True,
                "train__ema_decay": 0.9, "optim__bn_bias_lr_scale": 4.0, "data__flip": "alternate",
                "train__label_smoothing": 0.2, "schedule__name": "onecycle", "optim__nesterov": True,
                "eval__tta": "shift"}
    straight = train(tiny_config(tiny_root, tmp_path / "straight", **settings))
    train_until_stopped(tiny_config(tiny_root, tmp_path / "resumed", **settings), 5)
    resumed = train(tiny_config(tiny_root, tmp_path / "resumed", **settings), resume=True)
    a = read_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = read_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    for part in ("model", "train_model"):
        assert a[part].keys() == b[part].keys() and all(torch.equal(v, b[part][k]) for k, v in a[part].items())
    assert straight.summary["test_loss_final"] == resumed.summary["test_loss_final"]


def test_a_compile_mode_is_passed_to_torch_compile(tiny_root, tmp_path, monkeypatch):
    seen = []

    def fake_compile(model, mode=None):
        seen.append(mode)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    train(tiny_config(tiny_root, tmp_path / "a", train__compile="reduce-overhead", train__iters=1))
    train(tiny_config(tiny_root, tmp_path / "b", train__compile=True, train__iters=1))
    assert seen == ["reduce-overhead", None]
    with pytest.raises(UserError, match="train.compile must be"):
        load_config("fmnist-fast", ["train.compile=fast"])
