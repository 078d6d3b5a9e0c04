"""Techniques that buy accuracy per second (issue 15): native bf16 detection, the weight average, the alternating
flip and multi-view test-time augmentation. Each test fails when its option is ignored."""

from __future__ import annotations

import pytest
import torch
from support.enginekit import tiny_config, train_until_stopped

from resnetlab.data import AugmentConfig, ImageSet, Loader
from resnetlab.data.augment import FLIP
from resnetlab.engine import devices
from resnetlab.engine.checkpoint import read_checkpoint
from resnetlab.engine.evaluate import evaluate_model, tta_views
from resnetlab.engine.trainer import train
from resnetlab.errors import UserError
from resnetlab.models import create_model

pytestmark = pytest.mark.numeric  # also run with AVX2 kernels only by .ci/run (issue 11)


def test_auto_amp_follows_the_cpu_and_is_recorded(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setattr(devices, "native_bf16_cpu", lambda: True)
    assert devices.amp_dtype("auto", torch.device("cpu")) is torch.bfloat16
    monkeypatch.setattr(devices, "native_bf16_cpu", lambda: False)
    assert devices.amp_dtype("auto", torch.device("cpu")) is None
    summary = train(tiny_config(tiny_root, tmp_path / "run", train__iters=2)).summary
    assert summary["amp"] == "off" and summary["provenance"]["amp"] == "off" and summary["compile"] is False


def test_the_weight_average_is_what_is_evaluated_saved_and_resumed(tiny_root, tmp_path):
    settings = {"train__ema_decay": 0.9, "train__iters": 16, "train__eval_every": 8}
    straight = train(tiny_config(tiny_root, tmp_path / "straight", **settings))
    ckpt = read_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    averaged, trained = ckpt["model"], ckpt["train_model"]
    assert not torch.equal(averaged["conv1.weight"], trained["conv1.weight"])  # a real average, not the net
    assert not torch.equal(averaged["bn1.running_mean"], trained["bn1.running_mean"])  # BN statistics averaged too
    assert int(ckpt["hooks"]["ema"]["n_averaged"]) == 16
    plain = train(tiny_config(tiny_root, tmp_path / "plain", **{**settings, "train__ema_decay": 0.0}))
    assert straight.summary["test_loss_final"] != plain.summary["test_loss_final"]
    assert torch.equal(read_checkpoint(tmp_path / "plain" / "checkpoints" / "last.pt")["model"]["conv1.weight"],
                       trained["conv1.weight"])  # the trained weights are the same with or without the average
    train_until_stopped(tiny_config(tiny_root, tmp_path / "resumed", **settings), 5)  # between evaluations:
    # the average's state must come back from last.pt
    train(tiny_config(tiny_root, tmp_path / "resumed", **settings), resume=True)
    resumed = read_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert all(torch.equal(resumed["model"][k], v) for k, v in averaged.items())
    assert all(torch.equal(resumed["train_model"][k], v) for k, v in trained.items())


def _flip_column(loader: Loader, stored: torch.Tensor, epochs: int) -> list[torch.Tensor]:
    """Whether each image (its label is its index) came out mirrored, in each epoch."""
    normalized = (stored.float() / 255 - 0.5) / 0.25  # (N, C, H, W), as the loader normalizes
    seen = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        flips = torch.full((len(stored),), -1)
        for x, y in loader:
            for image, label in zip(x, y.tolist(), strict=True):
                if torch.allclose(image, normalized[label].flip(-1), atol=1e-5):
                    flips[label] = 1
                elif torch.allclose(image, normalized[label], atol=1e-5):
                    flips[label] = 0
        seen.append(flips)
    return seen


def test_the_alternating_flip_shows_every_image_both_ways_in_two_epochs():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8, generator=gen)
    data = ImageSet(images, torch.arange(64), [str(i) for i in range(64)])
    common = {"mean": [0.5], "std": [0.25], "seed": 3, "channels_last": True}
    alternate = Loader(data, 16, augment=AugmentConfig(flip="alternate"), **common)
    flips = _flip_column(alternate, images, 4)
    assert all(bool((f >= 0).all()) for f in flips)  # every image seen once per epoch, mirrored or not
    assert 16 < int(flips[0].sum()) < 48  # a coin per image in the first epoch
    assert all(torch.equal(flips[e] + flips[e + 1], torch.ones(64, dtype=torch.long)) for e in range(3))
    random = _flip_column(Loader(data, 16, augment=AugmentConfig(flip=True), **common), images, 4)
    assert not all(torch.equal(random[e] + random[e + 1], torch.ones(64, dtype=torch.long)) for e in range(3))
    with pytest.raises(UserError, match="flip must be"):
        AugmentConfig(flip="sometimes")
    params = alternate.transform.draw(4, 1)
    assert params is not None and params.shape[1] > FLIP


def test_shift_tta_averages_six_views_and_changes_the_prediction():
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    views = tta_views(x, "shift")
    assert len(views) == 6 and torch.equal(views[1], torch.flip(x, dims=[3]))
    assert torch.equal(views[2][..., 1:, 1:], x[..., :-1, :-1]) and torch.equal(views[3][..., :-1, :-1], x[..., 1:, 1:])
    assert len(tta_views(x, True)) == len(tta_views(x, "flip")) == 2 and tta_views(x, False) == [x]
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=4, in_chans=1).eval()
    batches = [(x, torch.tensor([0, 1, 2]))]
    losses = {mode: evaluate_model(model, batches, num_classes=4, tta=mode)["loss"]
              for mode in (False, "flip", "shift")}
    assert len(set(losses.values())) == 3
