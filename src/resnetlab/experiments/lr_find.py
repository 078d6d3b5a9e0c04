"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates"; popularised by fastai's `lr_find`).

The lr grows exponentially from `lr_min` to `lr_max`, one value per iteration of the recipe's own train loader,
model and optimizer; the loss is smoothed with a bias-corrected exponential moving average (beta 0.98, as
fastai) and the test stops early once the smoothed loss exceeds 4x the best one (it has diverged).

Suggestion rule: the lr where the smoothed loss falls fastest, i.e. the most negative slope of smoothed loss
against log10(lr), searched between the first few iterations (noisy while the average warms up) and the
minimum of the loss (past it the loss rises). When the loss never falls, the fallback is fastai's other rule,
the lr of the minimum loss divided by 10 (kept inside the swept range).

The model and optimizer are left exactly as they were (weights, BatchNorm statistics, gradients, optimizer
state and lr, the loader's position and the RNG states are saved before and restored after).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnetlab.errors import UserError

logger = logging.getLogger(__name__)

SMOOTHING = 0.98  # EMA factor of the loss (fastai's default)
DIVERGE = 4.0  # stop once the smoothed loss exceeds this multiple of the best one
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


def lr_find(cfg: Any, out: str | Path = "lr_find.png", iters: int = 200, lr_min: float = 1e-5,
            lr_max: float = 10.0) -> LRFindResult:
    """Run the range test on the recipe's data, model and optimizer, plot it, suggest an lr.

    Args:
        cfg: a resolved `Config` (e.g. from `load_config(recipe, overrides)`).
        out: where the PNG of loss against lr goes.
        iters: iterations of the test (the lr grows from lr_min to lr_max over them).
        lr_min: the first lr; lr_max: the last.

    Returns:
        LRFindResult (suggested_lr, plot, lrs, losses, rule).

    Raises:
        UserError: bad range or iterations, or anything the recipe's data or model cannot be built from.
    """
    from resnetlab.engine import builders

    check_range(iters, lr_min, lr_max)
    device = builders.select_device(cfg.train.device)
    threads = torch.get_num_threads()
    builders.configure_threads(cfg.train.threads)
    try:
        torch.manual_seed(cfg.train.seed)
        curve = _range_test(cfg, device, iters, lr_min, lr_max)
    finally:
        torch.set_num_threads(threads)
    suggested, rule = suggest_lr(curve.lrs, curve.losses)
    plot = plot_lr_find(curve, suggested, rule, Path(out), title=f"{cfg.model.name} on {cfg.data.name}")
    return LRFindResult(suggested_lr=suggested, plot=plot, lrs=curve.lrs, losses=curve.losses, rule=rule)


def _range_test(cfg: Any, device: torch.device, iters: int, lr_min: float, lr_max: float) -> LRCurve:
    """Build the recipe's data, model and optimizer (as the trainer does) and run the range test on them."""
    from resnetlab.engine import builders

    data = builders.build_data(cfg)
    loader = builders.make_loader(data.train, cfg, train=True, device=device, normalization=data.normalization)
    model = builders.build_model(cfg, in_chans=data.in_chans, num_classes=len(data.classes))
    model.to(device, memory_format=torch.channels_last if cfg.train.channels_last else torch.preserve_format)
    optimizer = builders.build_optimizer(model, cfg, cfg.optim.lr, device)
    amp = builders.amp_dtype(cfg.train.amp, device)
    logger.info("lr range test: %s on %s, lr %.1e -> %.1e over %d iterations", cfg.model.name, cfg.data.name,
                lr_min, lr_max, iters)
    # fp16 would need a GradScaler; the test only needs the loss's shape, so it runs fp16 setups in float32.
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    return lr_find_model(model, optimizer, loader, loss_fn=loss_fn, iters=iters, lr_min=lr_min, lr_max=lr_max,
                         amp_dtype=amp if amp == torch.bfloat16 else None)


def check_range(iters: int, lr_min: float, lr_max: float) -> None:
    """Refuse a range test that cannot say anything."""
    if iters < 10:
        raise UserError(f"--iters must be at least 10 for a range test (default 200); got {iters}")
    if not 0 < lr_min < lr_max:
        raise UserError(f"the lr range must satisfy 0 < --lr-min < --lr-max; got {lr_min} and {lr_max}")


def lr_find_model(model: nn.Module, optimizer: torch.optim.Optimizer, loader: Iterable[Any], *,
                  loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None, iters: int = 200,
                  lr_min: float = 1e-5, lr_max: float = 10.0, amp_dtype: torch.dtype | None = None) -> LRCurve:
    """The range test on an existing model and optimizer, which are restored exactly afterwards.

    Every parameter group gets the same lr at each iteration. The loader is iterated again when one pass
    is shorter than `iters`; its position is restored too when it has `state_dict()` (our Loader does).

    Args:
        model: the network (in place; put on its device already).
        optimizer: its optimizer.
        loader: yields (inputs, targets) on the model's device.
        loss_fn: defaults to cross-entropy.
        iters, lr_min, lr_max: the lr at iteration i is lr_min * (lr_max / lr_min) ** (i / (iters - 1)).
        amp_dtype: autocast dtype (bf16) or None for full precision.

    Returns:
        LRCurve; shorter than `iters` when the loss diverged.
    """
    check_range(iters, lr_min, lr_max)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    saved = _snapshot(model, optimizer, loader)
    lrs, losses, raw = [], [], []
    batches = _forever(loader)
    try:
        model.train()
        average, best = 0.0, math.inf
        device_type = next(model.parameters()).device.type
        for i, (inputs, targets) in zip(range(iters), batches, strict=False):
            lr = lr_min * (lr_max / lr_min) ** (i / (iters - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device_type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = loss_fn(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                break
            average = SMOOTHING * average + (1 - SMOOTHING) * value
            smoothed = average / (1 - SMOOTHING ** (i + 1))
            lrs.append(lr)
            losses.append(smoothed)
            raw.append(value)
            best = min(best, smoothed)
            if smoothed > DIVERGE * best:
                break
    finally:
        batches.close()  # finish the loader's iteration now, not at garbage collection after the restore
        _restore(model, optimizer, loader, saved)
    if len(lrs) < iters:
        logger.info("the loss diverged at lr %.2g; stopped after %d of %d iterations", lrs[-1] if lrs else lr_min,
                    len(lrs), iters)
    return LRCurve(lrs=lrs, losses=losses, raw_losses=raw)


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
    from matplotlib.figure import Figure

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


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer, loader: Any) -> dict[str, Any]:
    return {
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grads": [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()],
        "training": model.training,
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "loader": copy.deepcopy(loader.state_dict()) if hasattr(loader, "state_dict") else None,
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _restore(model: nn.Module, optimizer: torch.optim.Optimizer, loader: Any, saved: dict[str, Any]) -> None:
    model.load_state_dict(saved["model"])
    for param, grad in zip(model.parameters(), saved["grads"], strict=True):
        param.grad = grad
    model.train(saved["training"])
    optimizer.load_state_dict(saved["optimizer"])
    if saved["loader"] is not None:
        loader.load_state_dict(saved["loader"])
    torch.set_rng_state(saved["rng"])
    if saved["cuda_rng"] is not None:
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
