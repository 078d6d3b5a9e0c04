"""Fine-tuning: starting weights bring their preprocessing; the frozen phase, discriminative lr, exact resume.

Every test fails when its option is ignored: the frozen phase would move the backbone, the lr scale would give the
backbone the classifier's step, the weights' normalization would be measured on the data instead.
"""

from __future__ import annotations

import pytest
import torch
from support.enginekit import cli_args, read_rows, tiny_config, train_until_stopped
from support.hubkit import fill_cache, use_torch_home
from torch.optim.optimizer import register_optimizer_step_post_hook

from resnetlab.engine import builders
from resnetlab.engine.checkpoint import read_checkpoint, save_checkpoint
from resnetlab.engine.config import load_config
from resnetlab.engine.schedule import LRSchedule
from resnetlab.engine.trainer import train
from resnetlab.engine.weights import apply_weights_defaults

pytestmark = pytest.mark.numeric  # also run with AVX2 kernels only by .ci/run (issue 11)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _last(run_dir) -> dict:
    return read_checkpoint(run_dir / "checkpoints" / "last.pt")


@pytest.fixture
def start_weights(base_run, tmp_path):
    """A trained resnet20 (the shared base run's last.pt) as a weights file."""
    path = tmp_path / "start.pt"
    torch.save(_last(base_run)["model"], path)
    return path


# ----------------------------------------------------------------------------------- what the weights bring


def test_torchvision_weights_bring_imagenet_normalization_and_their_start(tiny_root, tmp_path, monkeypatch):
    use_torch_home(monkeypatch, tmp_path / "torch")
    _, state = fill_cache("resnet18", "IMAGENET1K_V1")
    common = {"model__name": "resnet18", "model__weights": "IMAGENET1K_V1", "data__resize": 32, "train__iters": 1,
              "optim__lr": 1e-12}
    result = train(tiny_config(tiny_root, tmp_path / "run", **common))
    saved = _last(result.run_dir)
    grey = [sum(IMAGENET_MEAN) / 3, sum(IMAGENET_STD) / 3]  # grey data: the channel average
    assert saved["normalization"]["mean"] + saved["normalization"]["std"] == pytest.approx(grey)
    assert saved["classes"] == [str(i) for i in range(10)] and saved["image_size"] == 32  # the data's, not ImageNet's
    assert torch.allclose(saved["model"]["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"], atol=1e-6)
    measured = train(tiny_config(tiny_root, tmp_path / "measured", data__weights_normalization=False, **common))
    assert _last(measured.run_dir)["normalization"]["mean"][0] == pytest.approx(0.45, abs=0.1)
    assert _last(measured.run_dir)["normalization"]["mean"] != saved["normalization"]["mean"]


def test_the_weights_image_size_applies_unless_the_config_sets_one(tmp_path):
    def resolved(*overrides: str):
        cfg = apply_weights_defaults(load_config("finetune", list(overrides)))
        return cfg.data.image_size, cfg.data.resize

    assert resolved() == (None, 224)  # fashion-mnist: resized on the device, no 224-px copies in memory
    assert resolved(f"data.name=imagefolder:{tmp_path}") == (224, None)  # decoded once at that size
    assert resolved("data.resize=64") == (None, 64) and resolved("data.image_size=48") == (48, None)
    assert resolved("model.weights=null") == (None, None)


def test_our_checkpoint_as_weights_brings_its_normalization(base_run, tiny_root, tmp_path, start_weights):
    ckpt = _last(base_run)
    ckpt["normalization"] = {"mean": [0.123], "std": [0.456]}
    theirs = save_checkpoint(tmp_path / "theirs.pt", ckpt)
    data = builders.build_data(tiny_config(tiny_root, None, model__weights=theirs))
    assert data.normalization == {"mean": [0.123], "std": [0.456]}
    bare = builders.build_data(tiny_config(tiny_root, None, model__weights=start_weights))  # a state dict alone
    assert bare.normalization["mean"][0] == pytest.approx(0.45, abs=0.1)
    off = builders.build_data(tiny_config(tiny_root, None, model__weights=theirs, data__weights_normalization=False))
    assert off.normalization == bare.normalization


def test_a_weights_name_offline_is_one_line_naming_the_file(tiny_root, tmp_path, monkeypatch, run_cli):
    cache = use_torch_home(monkeypatch, tmp_path / "torch")

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    code, _, err = run_cli(*cli_args(tiny_root, tmp_path / "run"), "--model", "resnet18", "--weights",
                           "IMAGENET1K_V1")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(cache / "resnet18-f37072fd.pth") in err and not (tmp_path / "run").exists()
    code, _, err = run_cli(*cli_args(tiny_root, tmp_path / "cifar"), "--weights", "IMAGENET1K_V1")  # resnet20
    assert code == 2 and "exist only for resnet18" in err


# ----------------------------------------------------------------------------------- the two phases


def _non_classifier(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def test_the_frozen_phase_trains_the_classifier_alone_and_keeps_batchnorm(base_run, tiny_root, tmp_path,
                                                                          start_weights):
    start = torch.load(start_weights)
    train(tiny_config(tiny_root, tmp_path / "frozen", model__weights=start_weights, train__freeze_epochs=1,
                      train__iters=4, train__eval_every=2))  # training mode again after each validation
    frozen = _last(tmp_path / "frozen")["model"]
    for name, value in _non_classifier(start).items():  # weights, BatchNorm statistics and counters
        assert torch.equal(frozen[name], value), name
    assert not torch.equal(frozen["fc.weight"], start["fc.weight"])


def test_every_layer_trains_after_the_frozen_phase(tiny_root, tmp_path, start_weights):
    seen = []

    def record(optimizer, args, kwargs):  # which parameters the step had gradients for
        seen.append(sum(p.grad is not None for group in optimizer.param_groups for p in group["params"]))

    handle = register_optimizer_step_post_hook(record)
    try:
        train(tiny_config(tiny_root, tmp_path / "run", model__weights=start_weights, train__freeze_epochs=0.25,
                          train__iters=6))  # 12 steps an epoch: 3 frozen steps
    finally:
        handle.remove()
    assert seen == [2, 2, 2, 59, 59, 59]  # fc.weight and fc.bias; then all 59 parameters of resnet20
    start, end = torch.load(start_weights), _last(tmp_path / "run")["model"]
    assert not torch.equal(end["bn1.running_mean"], start["bn1.running_mean"])


def test_backbone_lr_scale_gives_the_backbone_that_fraction_of_the_step(tiny_root, tmp_path):
    one_step = {"train__iters": 1, "optim__momentum": 0.0, "optim__nesterov": False, "optim__weight_decay": 0.0,
                "optim__lr": 0.05}
    train(tiny_config(tiny_root, tmp_path / "start", **{**one_step, "optim__lr": 1e-30}))
    train(tiny_config(tiny_root, tmp_path / "full", **one_step))
    train(tiny_config(tiny_root, tmp_path / "scaled", optim__backbone_lr_scale=0.1, **one_step))
    start, full, scaled = (_last(tmp_path / name)["model"] for name in ("start", "full", "scaled"))

    def step(state: dict, head: bool) -> float:
        return float(torch.cat([(state[k] - start[k]).flatten() for k in start
                                if start[k].is_floating_point() and "running" not in k
                                and k.startswith("fc.") == head]).norm())

    assert step(scaled, head=False) / step(full, head=False) == pytest.approx(0.1, rel=1e-3)
    assert step(scaled, head=True) == pytest.approx(step(full, head=True), rel=1e-5)
    assert _last(tmp_path / "scaled")["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.005)


def test_the_schedule_keeps_each_groups_ratio():
    cfg = tiny_config(".", None, optim__backbone_lr_scale=0.1, optim__no_weight_decay_bn_bias=True,
                      schedule__name="cosine")
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, bias=False), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4, 2))
    optimizer = builders.build_optimizer(model, cfg.optim, cfg.optim.lr, torch.device("cpu"))
    shapes = [(g["lr_scale"], g["weight_decay"], [tuple(p.shape) for p in g["params"]]) for g in optimizer.param_groups]
    assert shapes == [(0.1, cfg.optim.weight_decay, [(4, 1, 3, 3)]), (1.0, cfg.optim.weight_decay, [(2, 4)]),
                      (0.1, 0.0, [(4,), (4,)]), (1.0, 0.0, [(2,)])]
    lr = LRSchedule(cfg.schedule, cfg.optim.lr, 100).apply(optimizer, 30)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.1 * lr, lr, 0.1 * lr, lr])
    plain = builders.build_optimizer(model, tiny_config(".", None).optim, 0.05, torch.device("cpu"))
    assert "lr_scale" not in plain.param_groups[0]  # scale 1: the optimizer state looks as before


def test_the_switch_works_with_cudas_fused_sgd_and_changes_no_number(tiny_root, tmp_path, start_weights,
                                                                     monkeypatch):
    """CUDA's fused SGD refuses a step where some parameters have momentum buffers and others not (the backbone
    joining); the buffers the hook creates must make it run, and give the foreach kernels' numbers (here on the CPU,
    where torch has the fused kernel too)."""
    settings = {"model__weights": start_weights, "train__freeze_epochs": 0.25, "train__iters": 5,
                "optim__nesterov": False}
    train(tiny_config(tiny_root, tmp_path / "foreach", **settings))

    class FusedSGD(torch.optim.SGD):
        def __init__(self, params, **options):
            options.pop("foreach", None)
            super().__init__(params, fused=True, **options)

    monkeypatch.setattr(torch.optim, "SGD", FusedSGD)
    train(tiny_config(tiny_root, tmp_path / "fused", **settings))
    fused, foreach = _last(tmp_path / "fused"), _last(tmp_path / "foreach")
    assert all(torch.allclose(fused["model"][k], foreach["model"][k], rtol=1e-5, atol=1e-7) for k in foreach["model"])
    assert len(fused["optimizer"]["state"]) == 59  # every parameter has its buffer after the switch


# ------------------------------------------------------------------------------------------ resume


FINETUNE_SETTINGS = {"data__crop_padding": 2, "data__flip": True, "optim__nesterov": True,
                     "optim__backbone_lr_scale": 0.1, "schedule__name": "onecycle", "train__epochs": 2,
                     "train__freeze_epochs": 1, "train__eval_every": 5}


def test_resume_in_either_phase_is_bit_identical(tiny_root, tmp_path, start_weights):
    settings = {**FINETUNE_SETTINGS, "model__weights": start_weights}
    straight = train(tiny_config(tiny_root, tmp_path / "straight", **settings)).run_dir
    for stop_at in (5, 15):  # in the frozen phase (12 steps), and after the switch
        out = tmp_path / f"stopped-{stop_at}"
        train_until_stopped(tiny_config(tiny_root, out, **settings), stop_at)
        assert _last(out)["step"] == stop_at
        train(tiny_config(tiny_root, out, **settings), resume=True)
        final, reference = _last(out)["model"], _last(straight)["model"]
        assert all(torch.equal(final[k], reference[k]) for k in reference), stop_at
        assert read_rows(out)[-1]["val_loss"] == read_rows(straight)[-1]["val_loss"]
