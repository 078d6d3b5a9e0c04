"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates"; popularised by fastai's `lr_find`).

The lr grows exponentially from `lr_min` to `lr_max`, one value per iteration of the recipe's own run (data,
model, optimizer and training step, built and stepped by the engine); the loss is smoothed with a bias-corrected
exponential moving average (beta 0.98, as fastai) and the test stops once it has diverged (`diverged`).

Suggestion rule: the lr where the smoothed loss falls fastest, i.e. the most negative slope of smoothed loss
against log10(lr), searched between the first few iterations (noisy while the average warms up) and the
minimum of the loss (past it the loss rises). When the loss never falls, the fallback is fastai's other rule,
the lr of the minimum loss divided by 10 (kept inside the swept range).

How the suggestion relates to a one-cycle schedule (`schedule.name=onecycle`, Smith & Topin 2017): use it as
`optim.lr`, the peak of the cycle, which starts at lr / div_factor. The lr of the loss minimum (`minimum_lr`)
is an upper bound: there the loss is about to rise, and a one-cycle peak near it tends to diverge.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from resnetlab.engine.config import Config
from resnetlab.engine.devices import select_device
from resnetlab.engine.distributed import DistEnv, collective_failures, destroy_distributed, init_distributed
from resnetlab.engine.hooks import Hook
from resnetlab.engine.run import Run, build_run
from resnetlab.engine.runtime import process_settings
from resnetlab.engine.trainer import set_train_mode, train_step
from resnetlab.errors import UserError
from resnetlab.reports.plots import figure_path

logger = logging.getLogger(__name__)

SMOOTHING = 0.98  # EMA factor of the loss (fastai's default); shorter tests average over fewer steps (smoothing_for)
SMOOTHING_SPAN = 0.25  # a short test averages over about this fraction of its iterations (1 / (1 - beta) steps)
MAX_LR_FIND = 1e6  # the largest --lr-max: far past where any net here diverges (float32 overflows not far beyond)
MIN_TRUSTED_ITERS = 100  # a shorter test samples each decade of lr a few times only: its suggestion is rough
DIVERGE = 4.0  # stop once the smoothed loss exceeds this multiple of the best one
DIVERGE_WINDOW = 5  # or once this many raw losses in a row exceed twice the best, a decade of lr past it
SKIP_START = 10  # first iterations never suggested (the EMA is still warming up): at most 10, at most n/10


@dataclass(frozen=True)
class LRCurve:
    """The range test's record: the lr of every iteration and the smoothed and raw loss after it."""

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]


@dataclass(frozen=True)
class LRFindResult:
    """What `lr_find` found: the suggestion, the PNG, and the curve (`losses` smoothed)."""

    suggested_lr: float
    plot: Path
    lrs: list[float]
    losses: list[float]
    rule: str  # "steepest descent" or "minimum / 10"
    minimum_lr: float  # the lr of the lowest smoothed loss: an upper bound for a one-cycle peak


def lr_find(cfg: Config, out: str | Path = "lr_find.png", iters: int = 200, lr_min: float = 1e-5,
            lr_max: float = 10.0, hooks: Sequence[Hook] = ()) -> LRFindResult:
    """Run the range test on the recipe's data, model and optimizer, plot it, suggest an lr.

    The run is built and stepped by the engine (`build_run`, `train_step`), so the test honours every setting
    `resnetlab train` does (gradient clipping, frozen BatchNorm, compile, fp16 loss scaling, torchrun); nothing
    is written but the PNG, and the test split is never loaded.

    Args:
        cfg: a resolved `Config` (e.g. from `load_config(recipe, overrides)`).
        out: where the PNG of loss against lr goes.
        iters: iterations of the test (the lr grows from lr_min to lr_max over them).
        lr_min: the first lr; lr_max: the last.
        hooks: extra hooks on the training path (see `resnetlab.engine.hooks.Hook`).

    Returns:
        LRFindResult (suggested_lr, plot, lrs, losses, rule, minimum_lr).

    Raises:
        UserError: bad range or iterations, or anything the recipe's data or model cannot be built from.
    """
    check_range(iters, lr_min, lr_max)
    out = figure_path(out, "lr_find.png")  # x.txt fails now, not after the test
    if iters < MIN_TRUSTED_ITERS:
        decades = math.log10(lr_max / lr_min)
        logger.warning("a range test of %d iterations is too short to trust: %.0f steps per decade of lr over %.1f "
                       "decades, each loss an average of few batches; use --iters %d or more", iters,
                       iters / decades, decades, 2 * MIN_TRUSTED_ITERS)
    env = DistEnv.from_environ()
    device = select_device(cfg.train.device, env.local_rank)
    init_distributed(env, device, cfg.dist.timeout_s)
    try:
        with process_settings(cfg, device, env.is_main) as stop, collective_failures(env, cfg.dist.timeout_s):
            # the config's hooks too (fine-tuning's frozen phase); early stopping never fires: nothing is validated
            run = build_run(cfg, env, device, None, None, stop, hooks, with_test=False)
            logger.info("lr range test: %s on %s, lr %.1e -> %.1e over %d iterations", cfg.model.name, cfg.data.name,
                        lr_min, lr_max, iters)
            curve = _range_test(run, iters, lr_min, lr_max)
    finally:
        destroy_distributed()
    suggested, rule = suggest_lr(curve.lrs, curve.losses)
    minimum = curve.lrs[min(range(len(curve.losses)), key=curve.losses.__getitem__)]
    plot = plot_lr_find(curve, suggested, rule, Path(out), title=f"{cfg.model.name} on {cfg.data.name}") \
        if env.is_main else Path(out)
    return LRFindResult(suggested_lr=suggested, plot=plot, lrs=curve.lrs, losses=curve.losses, rule=rule,
                        minimum_lr=minimum)


class ExponentialRange:
    """The range test's schedule: lr_min * (lr_max / lr_min) ** (step / (iters - 1)), in place of the recipe's."""

    def __init__(self, iters: int, lr_min: float, lr_max: float) -> None:
        self.iters, self.lr_min, self.lr_max = iters, lr_min, lr_max

    def lr_at(self, step: int) -> float:
        return self.lr_min * (self.lr_max / self.lr_min) ** (step / (self.iters - 1))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # optim.backbone_lr_scale keeps its ratio
        return lr


def smoothing_for(iters: int) -> float:
    """The EMA factor for a test of `iters` steps: fastai's 0.98 (an average over ~50 steps) from 200 steps on (the
    default); shorter tests average over ~25% of their steps, or the average would lag the test behind the loss."""
    return min(SMOOTHING, 1 - 1 / max(2.0, SMOOTHING_SPAN * iters))


class RangeTracker:
    """The range test's bookkeeping: the smoothed loss, its best, and when the test has diverged (`add`)."""

    def __init__(self, iters: int) -> None:
        self.beta = smoothing_for(iters)
        self.short = iters < MIN_TRUSTED_ITERS
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.raw: list[float] = []
        self._average, self.best, self.best_lr = 0.0, math.inf, 0.0

    def add(self, lr: float, value: float) -> bool:
        """Record the loss after a step at `lr`; True when the test should stop (not finite, or diverged)."""
        if not math.isfinite(value):
            return True
        self._average = self.beta * self._average + (1 - self.beta) * value
        smoothed = self._average / (1 - self.beta ** (len(self.raw) + 1))
        self.lrs.append(lr)
        self.losses.append(smoothed)
        self.raw.append(value)
        if smoothed < self.best:
            self.best, self.best_lr = smoothed, lr
        if self.short and value > DIVERGE * self.best:  # a blow-up that a short test's average would reach too late
            return True
        return diverged(smoothed, self.best, self.raw[-DIVERGE_WINDOW:], lr, self.best_lr, start=self.losses[0])

    def curve(self) -> LRCurve:
        return LRCurve(lrs=self.lrs, losses=self.losses, raw_losses=self.raw)


def _range_test(run: Run, iters: int, lr_min: float, lr_max: float) -> LRCurve:
    """Step the run with an exponentially growing lr until `iters` steps or divergence; the smoothed losses."""
    run.schedule = ExponentialRange(iters, lr_min, lr_max)
    tracker = RangeTracker(iters)
    set_train_mode(run)
    for _, (x, y) in zip(range(iters), _forever(run.train_loader), strict=False):
        loss = train_step(run, x, y)
        if tracker.add(run.state.lr, float(loss.detach())):  # one host sync per step: the test needs every loss
            break
    if len(tracker.lrs) < iters:
        logger.info("the loss diverged at lr %.2g; stopped after %d of %d iterations",
                    tracker.lrs[-1] if tracker.lrs else lr_min, len(tracker.lrs), iters)
    return tracker.curve()


def diverged(smoothed: float, best: float, recent: list[float], lr: float, best_lr: float,
             start: float | None = None) -> bool:
    """Whether the test can stop: the smoothed loss is over 4x its best (fastai's rule), or, a decade of lr past
    the best loss, each of the last DIVERGE_WINDOW losses is over twice the best, or back above the first
    (smoothed) loss after it had fallen by 10% (a net that blew up often settles near chance level, under 4x and
    even 2x the best, where the smoothed loss would take long to get)."""
    if smoothed > DIVERGE * best:
        return True
    if lr <= 10 * best_lr or len(recent) < DIVERGE_WINDOW:
        return False
    lost_it = start is not None and best < 0.9 * start and min(recent) > start
    return min(recent) > 2 * best or lost_it


def check_range(iters: int, lr_min: float, lr_max: float) -> None:
    """Refuse a range test that cannot say anything."""
    if iters < 10:
        raise UserError(f"--iters must be at least 10 for a range test (default 200); got {iters}")
    if not 0 < lr_min < lr_max:
        raise UserError(f"the lr range must satisfy 0 < --lr-min < --lr-max; got {lr_min} and {lr_max}")
    if not lr_max <= MAX_LR_FIND:
        raise UserError(f"--lr-max must be at most {MAX_LR_FIND:g} (every net here diverges long before); got "
                        f"{lr_max:g}")


def suggest_lr(lrs: list[float], losses: list[float]) -> tuple[float, str]:
    """The lr of steepest descent of the smoothed loss against log10(lr) before its minimum (see the module
    docstring), or the minimum's lr / 10 when the loss never falls; returns (lr, rule)."""
    if not lrs:
        raise UserError("the loss was not finite from the first iteration; lower --lr-min")
    low = min(SKIP_START, len(lrs) // 10)
    best = min(range(len(losses)), key=losses.__getitem__)
    slopes = [(losses[i + 1] - losses[i - 1]) / (math.log10(lrs[i + 1]) - math.log10(lrs[i - 1]))
              for i in range(max(1, low), min(best, len(lrs) - 1))]
    if slopes and min(slopes) < 0:
        steepest = max(1, low) + min(range(len(slopes)), key=slopes.__getitem__)
        return lrs[steepest], "steepest descent"
    return max(lrs[0], lrs[best] / 10), "minimum / 10"


def plot_lr_find(curve: LRCurve, suggested: float, rule: str, out: Path, *, title: str = "") -> Path:
    """Loss (raw, faint; smoothed, bold) against lr on a log axis with the suggestion marked; returns `out`."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ax.plot(curve.lrs, curve.raw_losses, color="C0", alpha=0.25, linewidth=0.8, label="loss")
    ax.plot(curve.lrs, curve.losses, color="C0", linewidth=2, label="smoothed loss")
    index = curve.lrs.index(suggested) if suggested in curve.lrs else None
    ax.axvline(suggested, color="C3", linestyle=":")
    if index is not None:
        ax.plot([suggested], [curve.losses[index]], "o", color="C3")
    ax.plot([], [], color="C3", linestyle=":", marker="o", label=f"suggested lr {suggested:.2g} ({rule})")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    finite = [v for v in curve.raw_losses if math.isfinite(v)]
    if finite:  # the explosion at the end would squash the interesting part
        ax.set_ylim(min(finite) * 0.95, min(max(finite), 2 * curve.losses[0] + 0.1) * 1.05)
    ax.set_title(f"LR range test{': ' + title if title else ''}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


# ------------------------------------------------------------------------------------------------ helpers


def _forever(loader: Iterable[Any]) -> Iterator[Any]:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise UserError("the train loader yields no batch; lower data.batch_size")
