"""Every training option changes what it should (each test fails when its option is ignored)."""

from __future__ import annotations

import pytest
import torch
from support.enginekit import read_rows, tiny_config
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from resnetlab.engine import builders, devices, trainer
from resnetlab.engine.checkpoint import read_checkpoint
from resnetlab.engine.trainer import train
from resnetlab.errors import UserError

pytestmark = pytest.mark.numeric  # also run with AVX2 kernels only by .ci/run (issue 11)


def _last(run_dir) -> dict:
    return read_checkpoint(run_dir / "checkpoints" / "last.pt")


def _bn_stats(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}


# ------------------------------------------------------------------------------------- starting weights


def test_weights_start_from_a_state_dict(base_run, tiny_root, tmp_path):
    weights = tmp_path / "weights.pt"
    torch.save(read_checkpoint(base_run / "checkpoints" / "last.pt")["model"], weights)
    trained = read_rows(base_run)[-1]["val_acc"]
    one_step = {"train__iters": 1, "optim__lr": 1e-4, "optim__momentum": 0.0, "optim__weight_decay": 0.0}
    fresh = train(tiny_config(tiny_root, tmp_path / "fresh", **one_step)).summary
    tuned = train(tiny_config(tiny_root, tmp_path / "tuned", model__weights=weights, **one_step)).summary
    assert trained >= 0.9 and fresh["best_val_acc"] < 0.6
    assert tuned["best_val_acc"] == pytest.approx(trained, abs=0.05)


def test_freeze_bn_keeps_the_running_statistics(base_run, tiny_root, tmp_path):
    start = _last(base_run)["model"]
    weights = tmp_path / "weights.pt"
    torch.save(start, weights)
    common = {"model__weights": weights, "train__iters": 3, "optim__lr": 0.01}
    train(tiny_config(tiny_root, tmp_path / "frozen", train__freeze_bn=True, **common))
    train(tiny_config(tiny_root, tmp_path / "free", train__freeze_bn=False, **common))
    frozen, free = _last(tmp_path / "frozen")["model"], _last(tmp_path / "free")["model"]
    for name, value in _bn_stats(start).items():
        assert torch.equal(frozen[name], value), name
    assert any(not torch.equal(free[name], value) for name, value in _bn_stats(start).items())
    assert not torch.equal(frozen["conv1.weight"], start["conv1.weight"])  # the weights did train


# ------------------------------------------------------------------------------------- optimization


def _weight_change(run_dir, start_dir) -> float:
    a, b = _last(run_dir)["model"], _last(start_dir)["model"]
    return max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point())


def test_gradient_clipping_bounds_the_update(tiny_root, tmp_path):
    # the same initial weights (seed) and first batch in all three runs; BN statistics frozen
    common = {"train__iters": 1, "optim__momentum": 0.0, "optim__weight_decay": 0.0, "train__freeze_bn": True}
    train(tiny_config(tiny_root, tmp_path / "start", optim__lr=1e-30, **common))
    train(tiny_config(tiny_root, tmp_path / "clipped", optim__lr=0.1, train__grad_clip=1e-3, **common))
    train(tiny_config(tiny_root, tmp_path / "unclipped", optim__lr=0.1, **common))
    # one plain SGD step moves every weight by lr * grad, and the clipped gradient has norm <= 1e-3
    assert _weight_change(tmp_path / "clipped", tmp_path / "start") <= 0.1 * 1e-3 * 1.001
    assert _weight_change(tmp_path / "unclipped", tmp_path / "start") > 0.1 * 1e-3 * 10


def test_label_smoothing_changes_the_loss(tiny_root, tmp_path):
    plain = train(tiny_config(tiny_root, tmp_path / "plain", train__iters=2, train__eval_every=1))
    smooth = train(tiny_config(tiny_root, tmp_path / "smooth", train__iters=2, train__eval_every=1,
                               train__label_smoothing=0.5))
    # the first step starts from identical weights on the same batch; only the loss differs
    assert read_rows(plain.run_dir)[0]["train_acc"] == read_rows(smooth.run_dir)[0]["train_acc"]
    assert read_rows(plain.run_dir)[0]["train_loss"] != pytest.approx(read_rows(smooth.run_dir)[0]["train_loss"])


def _optimizer(**overrides) -> torch.optim.Optimizer:
    cfg = tiny_config(".", None, **overrides)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    return builders.build_optimizer(model, cfg.optim, cfg.optim.lr, torch.device("cpu"))


def test_optimizer_choices_and_their_settings():
    sgd = _optimizer(optim__nesterov=True, optim__momentum=0.8, optim__weight_decay=1e-3)
    assert isinstance(sgd, torch.optim.SGD)
    assert (sgd.defaults["nesterov"], sgd.defaults["momentum"]) == (True, 0.8)
    assert sgd.param_groups[0]["weight_decay"] == 1e-3
    adam = _optimizer(optim__name="adam", optim__betas="[0.8, 0.99]", optim__lr=1e-3, optim__eps=1e-6)
    assert type(adam) is torch.optim.Adam and (adam.defaults["betas"], adam.defaults["eps"]) == ((0.8, 0.99), 1e-6)
    assert type(_optimizer(optim__name="adamw", optim__lr=1e-3)) is torch.optim.AdamW


def test_no_weight_decay_on_batchnorm_and_biases():
    groups = _optimizer(optim__weight_decay=1e-3, optim__no_weight_decay_bn_bias=True).param_groups
    assert [(g["weight_decay"], [tuple(p.shape) for p in g["params"]]) for g in groups] == [
        (1e-3, [(4, 1, 3, 3), (2, 4)]), (0.0, [(4,), (4,), (2,)])]
    (single,) = _optimizer(optim__weight_decay=1e-3, optim__no_weight_decay_bn_bias=False).param_groups
    assert single["weight_decay"] == 1e-3 and len(single["params"]) == 5


# ------------------------------------------------------------------------------------- the machine


def test_amp_changes_the_arithmetic_and_fp16_scales_the_loss(tiny_root, tmp_path, monkeypatch):
    train(tiny_config(tiny_root, tmp_path / "fp32", train__iters=2, train__amp="off"))
    train(tiny_config(tiny_root, tmp_path / "bf16", train__iters=2, train__amp="bf16"))
    fp32, bf16 = (_last(tmp_path / name)["model"]["fc.weight"] for name in ("fp32", "bf16"))
    assert not torch.equal(fp32, bf16)
    train(tiny_config(tiny_root, tmp_path / "fp16", train__iters=2, train__amp="fp16"))
    assert _last(tmp_path / "fp16")["scaler"]["scale"] > 0 and _last(tmp_path / "fp32")["scaler"] == {}  # fp16 scales
    native = torch.bfloat16 if devices.native_bf16_cpu() else None  # AMX/AVX512_BF16 kernels: bf16, else none
    assert devices.amp_dtype("auto", torch.device("cpu")) is native
    monkeypatch.setattr(devices, "native_bf16_cpu", lambda: False)
    assert devices.amp_dtype("auto", torch.device("cpu")) is None  # auto: no autocast on a CPU that emulates bf16
    assert devices.amp_dtype("fp16", torch.device("cpu")) is torch.float16


def test_channels_last_reaches_the_model(tiny_root, tmp_path):
    train(tiny_config(tiny_root, tmp_path / "cl", train__iters=1, train__channels_last=True))
    train(tiny_config(tiny_root, tmp_path / "nchw", train__iters=1, train__channels_last=False))
    cl, nchw = _last(tmp_path / "cl")["model"], _last(tmp_path / "nchw")["model"]
    name = "layer1.0.conv1.weight"  # 16 -> 16 channels: the two layouts differ
    assert cl[name].is_contiguous(memory_format=torch.channels_last) and not cl[name].is_contiguous()
    assert nchw[name].is_contiguous()


def test_compile_wraps_the_model(tiny_root, tmp_path, monkeypatch):
    compiled = []

    def fake_compile(model, *args, **kwargs):
        compiled.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    train(tiny_config(tiny_root, tmp_path / "plain", train__iters=1))
    assert compiled == []
    train(tiny_config(tiny_root, tmp_path / "compiled", train__iters=1, train__compile=True))
    assert len(compiled) == 1 and isinstance(compiled[0], nn.Module)


def test_deterministic_and_threads_hold_during_training_and_are_restored(tiny_root, tmp_path):
    seen = []
    handle = register_optimizer_step_post_hook(
        lambda *a: seen.append((torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())))
    torch.set_num_threads(2)
    try:
        train(tiny_config(tiny_root, tmp_path / "det", train__iters=1, train__deterministic=True, train__threads=1))
        train(tiny_config(tiny_root, tmp_path / "nondet", train__iters=1, train__threads=1))
    finally:
        handle.remove()
    assert seen == [(True, 1), (False, 1)]
    assert (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()) == (False, 2)
    assert devices.configure_threads(0) == devices.physical_cores() == torch.get_num_threads()
    torch.set_num_threads(2)


def test_same_seed_same_weights_other_seed_other_weights(tiny_root, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        train(tiny_config(tiny_root, tmp_path / name, train__iters=2, train__seed=seed))
    a, b, c = (_last(tmp_path / n)["model"]["fc.weight"] for n in "abc")
    assert torch.equal(a, b) and not torch.equal(a, c)


# ------------------------------------------------------------------------------------- data and model


def test_data_options_reach_the_loader_and_the_checkpoint(tiny_root, tmp_path):
    cfg = tiny_config(tiny_root, None, data__crop_padding=3, data__flip=True, data__translate=1, data__cutout=4,
                      data__resize=16)
    train_aug, eval_aug = builders.augment_config(cfg.data, train=True), builders.augment_config(cfg.data, train=False)
    assert (train_aug.crop_padding, train_aug.flip, train_aug.translate, train_aug.cutout, train_aug.resize) == (
        3, True, 1, 4, 16)
    assert eval_aug.resize == 16 and not eval_aug.random
    result = train(tiny_config(tiny_root, tmp_path / "r16", train__iters=1, data__resize=16, data__normalize="pixel"))
    ckpt = _last(tmp_path / "r16")
    assert ckpt["image_size"] == 16
    assert torch.tensor(ckpt["normalization"]["mean"]).shape == (1, 12, 12)  # the paper's per-pixel mean
    assert result.summary["macs"] > 5_000_000 * (16 / 12) ** 2 * 0.9


def test_model_options_reach_create_model(tiny_root):
    def model(**kw):
        return builders.build_model(tiny_config(tiny_root, None, **kw).model, in_chans=1, num_classes=10)

    params = {s: sum(p.numel() for p in model(model__shortcut=s).parameters()) for s in "AB"}
    assert params["B"] > params["A"] == 269434  # option B adds 1x1 projections
    zero = model(model__zero_init_residual=True)
    assert all(float(m.bn2.weight.detach().abs().sum()) == 0 for m in zero.modules() if hasattr(m, "bn2"))
    assert builders.model_options(tiny_config(tiny_root, None, model__stem="cifar").model) == {"stem": "cifar"}
    options = tiny_config(tiny_root, None, model__options="{shortcut: B}").model
    assert builders.model_options(options) == {"shortcut": "B"}


def test_image_size_channels_and_eval_batch_size(tiny_root):
    cfg = tiny_config(tiny_root, None, data__image_size=8, data__channels=3, eval__batch_size=40)
    data = builders.build_data(cfg)
    assert (data.in_chans, data.image_size, len(data.normalization["mean"])) == (3, 8, 3)
    val = builders.make_loader(data.val, cfg, train=False, device=torch.device("cpu"),
                               normalization=data.normalization)
    assert len(val) == 3 and [len(y) for _, y in val] == [40, 40, 16]  # 96 validation images, every one once


def test_distributed_batch_and_lr_rules():
    cfg = tiny_config(".", None, data__batch_size=64, dist__lr_scaling="linear", optim__lr=0.1)
    assert builders.global_batch(cfg, 4) == 64 and builders.scaled_lr(cfg, 4) == pytest.approx(0.1)
    per_device = tiny_config(".", None, data__batch_size=64, dist__batch_size="per_device", dist__lr_scaling="linear")
    assert builders.global_batch(per_device, 4) == 256 and builders.scaled_lr(per_device, 4) == pytest.approx(0.2)
    with pytest.raises(UserError, match="multiple of 3"):
        builders.global_batch(cfg, 3)


def test_tta_is_used_for_the_test_evaluations(tiny_root, tmp_path, monkeypatch):
    calls = []
    real = trainer.evaluate_model

    def spy(model, loader, **kwargs):
        calls.append(kwargs.get("tta", False))
        return real(model, loader, **kwargs)

    monkeypatch.setattr(trainer, "evaluate_model", spy)
    train(tiny_config(tiny_root, tmp_path / "tta", train__iters=2, eval__tta=True))
    assert calls[0] is False and calls[-1] is True  # validation without, the test split with flip TTA
