"""The learning-rate range test on the engine's training path: the lr schedule, the suggestion rule, divergence,
the settings `train` honours (gradient clipping, frozen BatchNorm), and no test split."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from support.enginekit import tiny_config

from resnetlab.engine import builders
from resnetlab.engine.hooks import Hook
from resnetlab.errors import UserError
from resnetlab.experiments.lr_find import (
    LRCurve,
    RangeTracker,
    check_range,
    diverged,
    lr_find,
    plot_lr_find,
    suggest_lr,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Spy(Hook):
    """Records, after every step, the gradient norm and the BatchNorm running means of the run's net."""

    name = "spy"

    def __init__(self) -> None:
        self.grad_norms: list[float] = []
        self.bn_means: list[torch.Tensor] = []

    def after_step(self, run, loss) -> None:
        grads = [p.grad for p in run.net.parameters() if p.grad is not None]
        self.grad_norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        self.bn_means.append(run.net.bn1.running_mean.clone())


def _config(root: Path, **extra: object):
    return tiny_config(root, None, **{"train__log_every": 1000, **extra})


def test_lr_grows_exponentially_and_the_suggestion_is_on_the_way_down(tiny_root, tmp_path):
    result = lr_find(_config(tiny_root), tmp_path / "lr.png", iters=60, lr_min=1e-4, lr_max=10.0)
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:], strict=False)]
    assert result.lrs[0] == pytest.approx(1e-4)
    assert ratios == pytest.approx([(1e5) ** (1 / 59)] * len(ratios))
    assert 1e-4 <= result.suggested_lr <= result.minimum_lr and result.rule == "steepest descent"
    index = result.lrs.index(result.suggested_lr)
    assert result.losses[index + 1] < result.losses[index - 1]  # the loss falls there
    assert min(result.losses) < result.losses[0]  # the test saw learning
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr.png"]  # nothing else is written
    assert (tmp_path / "lr.png").read_bytes()[:8] == PNG_MAGIC


def test_divergence_stops_the_test_early(tiny_root, tmp_path):
    result = lr_find(_config(tiny_root), tmp_path / "lr.png", iters=200, lr_min=1e-3, lr_max=1e6)
    assert 10 < len(result.lrs) < 200
    assert diverged(result.losses[-1], min(result.losses), [], result.lrs[-1], result.minimum_lr) or \
        min(result.losses) * 2 < result.losses[-1]


def test_the_test_split_is_never_loaded(tiny_root, tmp_path, monkeypatch):
    splits = []
    real = builders.load_split
    monkeypatch.setattr(builders, "load_split", lambda cfg, split: splits.append(split) or real(cfg, split))
    lr_find(_config(tiny_root), tmp_path / "lr.png", iters=10, lr_min=1e-3, lr_max=1.0)
    assert splits == ["train"]


def test_it_trains_on_the_engine_path_with_gradient_clipping_and_frozen_batchnorm(tiny_root, tmp_path):
    clipped, frozen, free = Spy(), Spy(), Spy()
    lr_find(_config(tiny_root, train__grad_clip=0.01), tmp_path / "a.png", iters=10, lr_min=1e-3, lr_max=1.0,
            hooks=[clipped])
    assert max(clipped.grad_norms) <= 0.01 * (1 + 1e-5)  # clip_grad_norm_ ran before every step
    lr_find(_config(tiny_root, train__freeze_bn=True), tmp_path / "b.png", iters=10, lr_min=1e-3, lr_max=1.0,
            hooks=[frozen])
    assert all(torch.equal(m, torch.zeros_like(m)) for m in frozen.bn_means)  # BatchNorm kept its statistics
    lr_find(_config(tiny_root), tmp_path / "c.png", iters=10, lr_min=1e-3, lr_max=1.0, hooks=[free])
    assert max(free.grad_norms) > 0.01 and not torch.equal(free.bn_means[-1], torch.zeros_like(free.bn_means[-1]))


def test_suggestion_rule_on_known_curves():
    lrs = [10 ** (-5 + 6 * i / 99) for i in range(100)]
    # falls fastest at lr = 1e-2 (log10 = -2), bottoms out, then rises
    losses = [2 - math.tanh(2 * (math.log10(lr) + 2)) + (max(0.0, math.log10(lr)) ** 2) for lr in lrs]
    lr, rule = suggest_lr(lrs, losses)
    assert rule == "steepest descent" and abs(math.log10(lr) + 2) < 0.07
    rising = [1 + 0.01 * i for i in range(100)]
    assert suggest_lr(lrs, rising) == (lrs[0], "minimum / 10")  # min/10 clamped into the range
    with pytest.raises(UserError, match="lower --lr-min"):
        suggest_lr([], [])


@pytest.mark.parametrize(("iters", "lo", "hi"), [(5, 1e-5, 1.0), (100, 0.0, 1.0), (100, 1.0, 0.1)])
def test_bad_ranges_are_user_errors(iters, lo, hi):
    with pytest.raises(UserError):
        check_range(iters, lo, hi)


def test_plot_is_a_png(tmp_path: Path):
    lrs = [10 ** (-3 + 3 * i / 19) for i in range(20)]
    curve = LRCurve(lrs=lrs, losses=[2 - i / 20 for i in range(20)], raw_losses=[2 - i / 20 for i in range(20)])
    lr, rule = suggest_lr(curve.lrs, curve.losses)
    out = plot_lr_find(curve, lr, rule, tmp_path / "sub" / "lr.png", title="tiny")
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_plot_replaces_an_old_one_whole(tmp_path: Path):
    """The PNG goes through the atomic writer: written beside the old file and renamed over it, so a reader holding
    the old one (a hard link here) keeps it whole and no temporary file is left."""
    curve = LRCurve(lrs=[1e-3, 1e-2, 1e-1], losses=[2.0, 1.5, 1.8], raw_losses=[2.0, 1.5, 1.8])
    (tmp_path / "lr.png").write_bytes(b"old plot")
    os.link(tmp_path / "lr.png", tmp_path / "held")
    plot_lr_find(curve, 1e-2, "steepest descent", tmp_path / "lr.png")
    assert (tmp_path / "held").read_bytes() == b"old plot"
    assert (tmp_path / "lr.png").read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["held", "lr.png"]


LRS_40 = [1e-5 * 1e6 ** (i / 39) for i in range(40)]  # 40 iterations over 6 decades, as `lr-find --iters 40`


def _stop(raw: list[float]) -> int | None:
    tracker = RangeTracker(40)
    return next((i for i, (lr, loss) in enumerate(zip(LRS_40, raw, strict=True)) if tracker.add(lr, loss)), None)


def test_a_short_range_that_blows_up_stops():
    """The losses of `lr-find --iters 40` on Fashion-MNIST (3,000 images): a fall of 8% from 2.68, then a blow-up at
    lr 0.4-1.2 (single losses of 4 to 11) that the fixed 0.98 average took to only 4.3 (under 4x the best), then
    back near the start. The test went on to lr 10."""
    raw = [2.68 - 0.21 * min(i, 29) / 29 for i in range(30)] + [4.2, 7.4, 7.5, 11.0, 4.3] + [2.5] * 5
    stopped = _stop(raw)
    assert stopped is not None and LRS_40[stopped] < 1.5  # at the blow-up, not at lr 10


def test_a_short_range_that_settles_back_at_chance_stops():
    """The loss falls from chance (2.3) to 1.5, then the net blows up without a spike and settles back at chance,
    under 2x the best: no 4x rule fires; being back above the start a decade past the best does."""
    raw = [2.3 - 0.8 * min(i, 20) / 20 for i in range(24)] + [2.35] * 16  # best near lr 2e-2
    stopped = _stop(raw)
    assert stopped is not None and LRS_40[stopped] < 2.0


def test_a_short_range_warns(tiny_root, tmp_path, caplog):
    with caplog.at_level("WARNING"):
        lr_find(_config(tiny_root), tmp_path / "lr.png", iters=20, lr_min=1e-3, lr_max=1.0)
    assert "a range test of 20 iterations is too short to trust" in caplog.text


def test_bad_output_and_range_fail_before_the_test(tiny_root, tmp_path):
    with pytest.raises(UserError, match=r"--out .*x.txt: .txt is not an image format; use .png"):
        lr_find(_config(tiny_root), tmp_path / "x.txt", iters=20)
    with pytest.raises(UserError, match="--lr-max must be at most 1e"):
        lr_find(_config(tiny_root), tmp_path / "lr.png", iters=20, lr_max=1e300)
