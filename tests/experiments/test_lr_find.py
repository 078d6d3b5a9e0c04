"""The learning-rate range test: the lr schedule, the suggestion rule, divergence, and that the model,
optimizer, loader and RNG are exactly as before."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from resnetlab.errors import UserError
from resnetlab.experiments.lr_find import check_range, lr_find_model, plot_lr_find, suggest_lr

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ListLoader:
    """A loader over fixed batches with a position that `state_dict` saves (like our Loader)."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches
        self.position = 0

    def __iter__(self):
        while self.position < len(self.batches):
            self.position += 1
            yield self.batches[self.position - 1]
        self.position = 0

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


def make_problem(seed: int = 0):
    """A small conv net with BatchNorm on a learnable 3-class problem (class = which third of the image is lit)."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(8):
        y = torch.randint(0, 3, (16,), generator=gen)
        x = torch.randn(16, 1, 6, 6, generator=gen) * 0.3
        for i, label in enumerate(y.tolist()):
            x[i, 0, 2 * label: 2 * label + 2] += 1.0
        batches.append((x, y))
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(288, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    return model, optimizer, ListLoader(batches)


def test_model_optimizer_loader_and_rng_are_exactly_restored():
    model, optimizer, loader = make_problem()
    x, y = loader.batches[0]
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()  # momentum buffers exist now
    nn.functional.cross_entropy(model(x), y).backward()  # and gradients are pending
    model.eval()
    next(iter(loader))  # the loader is mid-epoch
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    momentum = [optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    params = list(model.parameters())

    curve = lr_find_model(model, optimizer, loader, iters=30, lr_min=1e-4, lr_max=1.0)

    assert len(curve.lrs) == 30  # it really trained: 30 steps
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert not model.training
    assert list(model.parameters()) == params and all(p is q for p, q in zip(model.parameters(), params, strict=True))
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))
    assert all(torch.equal(optimizer.state[p]["momentum_buffer"], m)
               for p, m in zip(model.parameters(), momentum, strict=True))
    assert [g["lr"] for g in optimizer.param_groups] == [0.05]
    assert loader.position == 1 and torch.equal(torch.get_rng_state(), rng)


def test_lr_grows_exponentially_and_the_suggestion_is_on_the_way_down():
    model, optimizer, loader = make_problem()
    curve = lr_find_model(model, optimizer, loader, iters=60, lr_min=1e-4, lr_max=10.0)
    ratios = [b / a for a, b in zip(curve.lrs, curve.lrs[1:], strict=False)]
    assert curve.lrs[0] == pytest.approx(1e-4)
    assert ratios == pytest.approx([(1e5) ** (1 / 59)] * len(ratios))
    assert curve.losses[0] == pytest.approx(curve.raw_losses[0])  # bias-corrected EMA starts at the first loss
    lr, rule = suggest_lr(curve.lrs, curve.losses)
    assert 1e-4 <= lr <= 10.0 and rule == "steepest descent"
    index = curve.lrs.index(lr)
    assert curve.losses[index + 1] < curve.losses[index - 1]  # the loss falls there
    assert min(curve.losses) < curve.losses[0]  # the test saw learning


def test_divergence_stops_the_test_early():
    model, optimizer, loader = make_problem()
    curve = lr_find_model(model, optimizer, loader, iters=200, lr_min=1e-3, lr_max=1e6)
    assert 10 < len(curve.lrs) < 200
    assert curve.losses[-1] > 4 * min(curve.losses) or not math.isfinite(curve.raw_losses[-1])


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
    model, optimizer, loader = make_problem()
    curve = lr_find_model(model, optimizer, loader, iters=20, lr_min=1e-3, lr_max=1.0)
    lr, rule = suggest_lr(curve.lrs, curve.losses)
    out = plot_lr_find(curve, lr, rule, tmp_path / "sub" / "lr.png", title="tiny")
    assert out.read_bytes()[:8] == PNG_MAGIC
