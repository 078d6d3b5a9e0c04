"""Learning-rate schedules: exact values at the iterations that matter."""

from __future__ import annotations

import math

import pytest
import torch

from resnetlab.engine.config import ScheduleConfig, load_config
from resnetlab.engine.schedule import LRSchedule, resolve_iters


def test_paper_warmup_returns_to_0_1_after_400_iterations():
    cfg = load_config("he2016-cifar10-deep", [])
    sched = LRSchedule(cfg.schedule, cfg.optim.lr, cfg.train.iters)
    assert [sched.lr_at(i) for i in (0, 1, 200, 399)] == [0.01] * 4
    assert sched.lr_at(400) == 0.1 and sched.lr_at(31999) == 0.1
    assert sched.lr_at(32000) == pytest.approx(0.01) and sched.lr_at(48000) == pytest.approx(0.001)
    assert sched.lr_at(63999) == pytest.approx(0.001)


def test_multistep_drops_exactly_at_the_milestones():
    sched = LRSchedule(ScheduleConfig(name="multistep", milestones=[32000, 48000], gamma=0.1), 0.1, 64000)
    lrs = {i: sched.lr_at(i) for i in (0, 31999, 32000, 47999, 48000)}
    assert lrs[0] == lrs[31999] == 0.1
    assert lrs[32000] == lrs[47999] == pytest.approx(0.01)
    assert lrs[48000] == pytest.approx(0.001)


def test_fractional_milestones_follow_the_run_length():
    cfg = ScheduleConfig(name="multistep", milestones=[0.5, 0.75], gamma=0.1)
    for total in (100, 1000):
        sched = LRSchedule(cfg, 1.0, total)
        assert sched.milestones == [total // 2, 3 * total // 4]
        assert sched.lr_at(total // 2 - 1) == 1.0 and sched.lr_at(total // 2) == pytest.approx(0.1)
    assert resolve_iters(0.2, 390) == 78 and resolve_iters(400, 10) == 400


def test_step_schedule_multiplies_every_step_size():
    sched = LRSchedule(ScheduleConfig(name="step", step_size=0.2, gamma=0.9), 1e-3, 2150)  # 2 of 10 epochs of 215
    assert sched.step_size == 430
    assert sched.lr_at(429) == 1e-3 and sched.lr_at(430) == pytest.approx(9e-4)
    assert sched.lr_at(2149) == pytest.approx(1e-3 * 0.9**4)


def test_cosine_and_linear_warmup():
    sched = LRSchedule(ScheduleConfig(name="cosine", min_lr=0.001, warmup_iters=10, warmup_lr=0.0), 0.1, 110)
    assert sched.lr_at(0) == 0.0
    assert sched.lr_at(5) == pytest.approx(0.5 * sched._schedule_lr(5))
    assert sched.lr_at(10) == pytest.approx(0.001 + 0.099 * 0.5 * (1 + math.cos(math.pi * 10 / 110)))
    assert sched.lr_at(55) == pytest.approx(0.001 + 0.099 / 2)
    assert sched.lr_at(110) == pytest.approx(0.001)


def test_onecycle_rises_to_the_peak_then_anneals():
    sched = LRSchedule(ScheduleConfig(name="onecycle", pct_start=0.25, div_factor=25, final_div_factor=1e4), 0.2, 400)
    assert sched.lr_at(0) == pytest.approx(0.2 / 25)
    assert sched.lr_at(100) == pytest.approx(0.2)
    assert sched.lr_at(50) == pytest.approx((0.2 + 0.2 / 25) / 2)
    assert sched.lr_at(400) == pytest.approx(0.2 / 25 / 1e4)
    lrs = [sched.lr_at(i) for i in range(400)]
    assert max(lrs) == pytest.approx(0.2) and lrs.index(max(lrs)) == 100
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:], strict=False))


def test_constant_schedule_and_apply_sets_every_group():
    sched = LRSchedule(ScheduleConfig(name="constant"), 0.05, 10)
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))]
    opt = torch.optim.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=1.0)
    assert sched.apply(opt, 3) == 0.05
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.05]


def test_plateau_reduces_after_patience_evaluations_and_its_state_round_trips():
    cfg = ScheduleConfig(name="plateau", patience=2, gamma=0.5)
    sched = LRSchedule(cfg, 0.1, 1000)
    for loss in (1.0, 0.9, 0.95, 0.95):  # two evaluations without improvement: still patient
        sched.observe(loss)
    assert sched.lr_at(500) == 0.1
    sched.observe(0.95)  # the third one
    assert sched.lr_at(500) == pytest.approx(0.05)
    other = LRSchedule(cfg, 0.1, 1000)
    other.load_state_dict(sched.state_dict())
    assert other.lr_at(0) == pytest.approx(0.05) and other.state_dict() == sched.state_dict()
    assert all(isinstance(v, (int, float)) for v in sched.state_dict().values())
    sched.observe(None)  # no validation split: nothing changes
    assert sched.state_dict() == other.state_dict()
