"""The training loop: `train(cfg)` builds a run, `fit()` trains it, `finish()` tests it and writes the summary.

Reading order: train() -> fit() -> train_one_epoch() -> train_step(); validate_and_checkpoint() at every
evaluation point; finish() at the end. Training and evaluation share one `Metrics` accumulator type; the
train accumulator covers the iterations since the previous evaluation and syncs with the host only at
logging and evaluation points (no `.item()` per step).

Exact resume: a checkpoint holds everything the next step depends on (weights, optimizer, schedule,
scaler, loader position and generator, the partial train metrics, every RNG), so a run interrupted
anywhere and resumed ends with the same weights as one that never stopped (bit-identical on the CPU).
"""

from __future__ import annotations

import copy
import logging
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnetlab.data import Loader
from resnetlab.engine import builders
from resnetlab.engine.checkpoint import (
    FORMAT_VERSION,
    capture_rng,
    read_checkpoint,
    restore_rng,
    save_checkpoint,
)
from resnetlab.engine.config import Config, config_to_dict, dump_config
from resnetlab.engine.distributed import (
    DistEnv,
    all_reduce_sum,
    any_rank,
    barrier,
    check_resume_world_size,
    collective_failures,
    convert_sync_batchnorm,
    destroy_distributed,
    in_turn,
    init_distributed,
)
from resnetlab.engine.evaluate import evaluate
from resnetlab.engine.metrics import Metrics
from resnetlab.engine.run import check_run_dir
from resnetlab.engine.rundir import truncate_metrics, write_summary
from resnetlab.engine.runlog import RunLogger
from resnetlab.engine.runtime import StopSignals, process_settings, seed_everything
from resnetlab.engine.schedule import LRSchedule
from resnetlab.errors import Interrupted, TrainingFailed
from resnetlab.models import summarize

log = logging.getLogger(__name__)

@dataclass
class RunResult:
    """What `train()` returns: the run directory, summary.json's content, and whether this is rank 0."""

    run_dir: Path
    summary: dict[str, Any]
    is_main_process: bool


@dataclass
class TrainState:
    """The loop's counters and the model selection, saved in every checkpoint as plain values."""

    step: int = 0
    lr: float = 0.0
    best_val_acc: float | None = None
    best_step: int = 0
    top_k: list[list[float]] = field(default_factory=list)  # [val_acc, step] of the kept top-k checkpoints
    train_time_s: float = 0.0  # the training loop, summed over resumed attempts
    step_time_s: float = 0.0  # the part of it spent in training steps (for images/s)
    images_seen: int = 0
    final_train_acc: float | None = None


@dataclass
class Run:
    """Everything one training run works with (built by `_build_run`)."""

    cfg: Config
    env: DistEnv
    device: torch.device
    run_dir: Path
    data: builders.Datasets
    net: nn.Module  # the plain model: what is saved and evaluated
    model: nn.Module  # what is trained: `net`, maybe compiled and/or wrapped in DDP
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    amp: torch.dtype | None
    train_loader: Loader
    val_loader: Loader | None
    train_metrics: Metrics
    total_iters: int
    steps_per_epoch: int
    state: TrainState
    stop: StopSignals
    logger: RunLogger | None = None
    finite: torch.Tensor | None = None  # False once a loss was NaN/inf (checked at logging points only)
    clock: dict[str, float] = field(default_factory=dict)  # loop start, period start, period images/steps

    @property
    def checkpoints(self) -> Path:
        """RUN_DIR/checkpoints."""
        return self.run_dir / "checkpoints"


# ------------------------------------------------------------------------------------------- train()


def train(cfg: Config, *, resume: bool = False) -> RunResult:
    """Train a model as `cfg` says and test it once at the end.

    Args:
        cfg: the run configuration (`load_config`); `train.out_dir` is the run directory.
        resume: continue the run in `train.out_dir` from checkpoints/last.pt, with the run's own config.

    Returns:
        RunResult(run_dir, summary (summary.json's content), is_main_process).

    Raises:
        UserError: an impossible setting, an existing run directory without `resume`, missing data.
        TrainingFailed: the loss became NaN or infinite (last.pt keeps the last good state).
        Interrupted: SIGINT/SIGTERM arrived; last.pt was saved, `resume=True` continues.
    """
    wall_start = time.perf_counter()
    env = DistEnv.from_environ()
    device = builders.select_device(cfg.train.device, env.local_rank)
    init_distributed(env, device, cfg.dist.timeout_s)
    try:
        run_dir, ckpt, cfg = check_run_dir(cfg, resume)
        with process_settings(cfg, device, env.is_main) as stop, collective_failures(env, cfg.dist.timeout_s):
            run = _build_run(cfg, env, device, run_dir, ckpt, stop)
            try:
                fit(run)
                summary = finish(run, wall_start)
            finally:
                if run.logger is not None:
                    run.logger.close()
    finally:
        destroy_distributed()
    return RunResult(run_dir=run_dir, summary=summary, is_main_process=env.is_main)


def fit(run: Run) -> None:
    """Train for `run.total_iters` iterations, evaluating and checkpointing at every evaluation point."""
    _announce(run)
    now = time.perf_counter()
    run.clock.update(loop_start=now, loop_base=run.state.train_time_s)
    _start_period(run, now)
    while run.state.step < run.total_iters:
        train_one_epoch(run)


def train_one_epoch(run: Run) -> None:
    """The remaining batches of the loader's current epoch (or fewer, when the run ends or is stopped)."""
    _set_train_mode(run)
    for x, y in run.train_loader:
        train_step(run, x, y)
        step = run.state.step
        if step % run.cfg.train.log_every == 0:
            _log_progress(run)
        if _is_eval_point(run, step):
            validate_and_checkpoint(run)
            _set_train_mode(run)
        signum = _stop_signal(run)
        if signum is not None:
            _interrupt(run, signum)
        if step >= run.total_iters:
            return


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor) -> None:
    """One optimizer step on the batch (x, y); nothing here waits for the device."""
    run.state.lr = run.schedule.apply(run.optimizer, run.state.step)
    with torch.autocast(run.device.type, dtype=run.amp, enabled=run.amp is not None):
        logits = run.model(x)  # (B, K)
        loss = run.criterion(logits, y)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if run.cfg.train.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.net.parameters(), run.cfg.train.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.train_metrics.update(logits, y, loss)
    run.finite &= torch.isfinite(loss.detach())
    run.state.step += 1
    run.clock["period_images"] += x.shape[0] * run.env.world_size


def validate_and_checkpoint(run: Run) -> None:
    """Evaluate the validation split, append the metrics row, update best/top-k and save last.pt."""
    _check_finite(run)
    period_s, period_images = _close_period(run)
    train = run.train_metrics.compute()
    run.train_metrics.reset()
    val = None
    if run.val_loader is not None:
        val = evaluate(run.net, run.val_loader, num_classes=len(run.data.classes), amp_dtype=run.amp)
    run.schedule.observe(val["loss"] if val else None)
    run.state.final_train_acc = train["acc"]
    run.state.train_time_s = _loop_time(run)
    if run.logger is not None:
        run.logger.evaluation({
            "step": run.state.step, "epoch": round(run.state.step / run.steps_per_epoch, 4), "lr": run.state.lr,
            "train_loss": train["loss"], "train_acc": train["acc"],
            "val_loss": val["loss"] if val else None, "val_acc": val["acc"] if val else None,
            "images_per_s": period_images / max(period_s, 1e-9), "time_s": run.state.train_time_s,
        })
    _save_checkpoints(run, val["acc"] if val else None)
    _start_period(run, time.perf_counter())


def finish(run: Run, wall_start: float) -> dict[str, Any]:
    """Test the best-validation and the final model once, then write summary.json (last: it means done)."""
    test_loader = builders.make_loader(run.data.test, run.cfg, train=False, device=run.device,
                                       normalization=run.data.normalization, rank=run.env.rank,
                                       world_size=run.env.world_size)
    test = {"num_classes": len(run.data.classes), "amp_dtype": run.amp, "tta": run.cfg.eval.tta}
    final = evaluate(run.net, test_loader, **test)
    best = final
    if run.state.best_step != run.state.step:
        best_net = copy.deepcopy(run.net)
        best_net.load_state_dict(read_checkpoint(run.checkpoints / "best.pt")["model"])
        best = evaluate(best_net, test_loader, **test)
    s = run.state
    summary = {
        "best_val_acc": s.best_val_acc, "best_step": s.best_step,
        "test_acc": best["acc"], "test_loss": best["loss"], "test_acc_final": final["acc"],
        "test_loss_final": final["loss"], "final_train_acc": s.final_train_acc,
        **_model_size(run), "steps": s.step, "epochs": round(s.step / run.steps_per_epoch, 4),
        "train_time_s": s.train_time_s, "wall_time_s": time.perf_counter() - wall_start,
        "images_per_s": s.images_seen / max(s.step_time_s, 1e-9),
        "model": run.cfg.model.name, "data": run.cfg.data.name, "recipe": run.cfg.recipe, "seed": run.cfg.train.seed,
        "device": str(run.device), "world_size": run.env.world_size,
    }
    if run.env.is_main:
        write_summary(run.run_dir, summary)
        assert run.logger is not None
        run.logger.info("test accuracy %.2f%% (best-validation model, step %d), %.2f%% (final model); %s",
                        100 * summary["test_acc"], s.best_step, 100 * summary["test_acc_final"], run.run_dir)
    return summary


# --------------------------------------------------------------------------------------- building a run


def _build_run(cfg: Config, env: DistEnv, device: torch.device, run_dir: Path, ckpt: dict[str, Any] | None,
               stop: StopSignals) -> Run:
    """Data, model, optimizer, schedule, loaders; restored from `ckpt` when resuming."""
    seed_everything(cfg.train.seed)
    with in_turn(env, enabled=cfg.data.download):  # never two downloads into one folder at once
        data = builders.build_data(cfg)
    net = builders.build_model(cfg, in_chans=data.in_chans, num_classes=len(data.classes))
    net.to(device, memory_format=torch.channels_last if cfg.train.channels_last else torch.preserve_format)
    net = convert_sync_batchnorm(net, env, device, cfg.dist.sync_bn)
    loader_args = {"device": device, "normalization": data.normalization, "rank": env.rank,
                   "world_size": env.world_size}
    train_loader = builders.make_loader(data.train, cfg, train=True, **loader_args)
    val_loader = builders.make_loader(data.val, cfg, train=False, **loader_args) if data.val is not None else None
    steps_per_epoch = len(train_loader)
    total_iters = cfg.train.iters or cfg.train.epochs * steps_per_epoch
    lr = builders.scaled_lr(cfg, env.world_size)
    amp = builders.amp_dtype(cfg.train.amp, device)
    run = Run(cfg=cfg, env=env, device=device, run_dir=run_dir, data=data, net=net, model=_wrap(net, cfg, env, device),
              optimizer=builders.build_optimizer(net, cfg, lr, device),
              schedule=LRSchedule(cfg.schedule, lr, total_iters),
              scaler=_grad_scaler(device, amp),
              criterion=nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing), amp=amp,
              train_loader=train_loader, val_loader=val_loader,
              train_metrics=Metrics(len(data.classes), device=device), total_iters=total_iters,
              steps_per_epoch=steps_per_epoch, state=TrainState(), stop=stop,
              finite=torch.ones((), dtype=torch.bool, device=device))
    if ckpt is not None:
        _restore(run, ckpt)
    elif env.is_main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_config(cfg))
    barrier()
    run.logger = RunLogger(run_dir if env.is_main else None, total_iters, run.state.step, cfg.train.quiet)
    return run


def _grad_scaler(device: torch.device, amp: torch.dtype | None) -> torch.amp.GradScaler:
    # fp16 needs loss scaling (its range is small); bf16 and float32 do not, and a disabled scaler is a no-op.
    enabled = amp == torch.float16
    return torch.amp.GradScaler(device.type if enabled else "cpu", enabled=enabled)


def _wrap(net: nn.Module, cfg: Config, env: DistEnv, device: torch.device) -> nn.Module:
    model = net
    if env.distributed:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if builders.use_compile(cfg.train.compile, device):
        model = torch.compile(model)
    return model


# -------------------------------------------------------------------------------------- loop helpers


def _announce(run: Run) -> None:
    d, cfg = run.data, run.cfg
    if run.logger is None:
        return
    val = len(d.val) if d.val is not None else 0
    run.logger.info("%s on %s (%d train / %d val / %d test, %d classes), %s, %d threads; %d iterations "
                    "(%.2f epochs of %d, batch %d)", cfg.model.name, cfg.data.name, len(d.train), val, len(d.test),
                    len(d.classes), run.device, torch.get_num_threads(), run.total_iters,
                    run.total_iters / run.steps_per_epoch, run.steps_per_epoch, cfg.data.batch_size)
    world = run.env.world_size
    if world > 1:
        batch = builders.global_batch(cfg, world)
        run.logger.info("global batch %d = %d processes x %d (dist.batch_size=%s), lr %g (dist.lr_scaling=%s)",
                        batch, world, batch // world, cfg.dist.batch_size, builders.scaled_lr(cfg, world),
                        cfg.dist.lr_scaling)
    if run.state.step:
        run.logger.info("resuming %s at step %d", run.run_dir, run.state.step)
    if run.val_loader is None:
        run.logger.info("no validation split (data.val_size=0): best.pt is the last model, test_acc the final one's")


def _set_train_mode(run: Run) -> None:
    run.model.train()
    if run.cfg.train.freeze_bn:
        # BatchNorm in eval mode normalizes with, and keeps, its running statistics (fine-tuning, small batches).
        for module in run.net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def _is_eval_point(run: Run, step: int) -> bool:
    every = run.cfg.train.eval_every or run.steps_per_epoch
    return step % every == 0 or step >= run.total_iters


def _start_period(run: Run, now: float) -> None:
    run.clock.update(period_start=now, period_images=0.0, period_step=float(run.state.step))


def _close_period(run: Run) -> tuple[float, float]:
    """Add the training steps since the period started to the throughput totals; returns (seconds, images)."""
    seconds, images = time.perf_counter() - run.clock["period_start"], run.clock["period_images"]
    run.state.step_time_s += seconds
    run.state.images_seen += int(images)
    return seconds, images


def _loop_time(run: Run) -> float:
    return run.clock["loop_base"] + time.perf_counter() - run.clock["loop_start"]


def _log_progress(run: Run) -> None:
    _check_finite(run)
    train = run.train_metrics.compute()
    elapsed = time.perf_counter() - run.clock["period_start"]
    steps = max(1.0, run.state.step - run.clock["period_step"])
    if run.logger is not None:
        run.logger.progress(run.state.step, {"loss": train["loss"], "acc": train["acc"], "lr": run.state.lr,
                                             "images_per_s": run.clock["period_images"] / max(elapsed, 1e-9),
                                             "s_per_step": elapsed / steps})


def _check_finite(run: Run) -> None:
    """Raise TrainingFailed (on every rank) if a loss since the last check, a weight or a BN statistic is NaN/inf."""
    assert run.finite is not None
    tensors = [t.detach() for t in (*run.net.parameters(), *run.net.buffers()) if t.is_floating_point()]
    state_ok = torch.stack([t.isfinite().all() for t in tensors]).all()
    bad = any_rank(not bool(run.finite & state_ok), run.device)
    if bad:
        raise TrainingFailed(f"the loss became NaN or infinite before step {run.state.step} (lr {run.state.lr:.3g}); "
                             f"{run.checkpoints / 'last.pt'} keeps the last good state; lower optim.lr or set "
                             "train.grad_clip")


def _stop_signal(run: Run) -> int | None:
    """The signal that asks this run to stop, agreed by all ranks (checked every step in one process)."""
    signum = run.stop.signum
    if not run.env.distributed:
        return signum
    if run.state.step % run.cfg.train.log_every:
        return None
    return (signum or int(signal.SIGTERM)) if any_rank(signum is not None, run.device) else None


def _interrupt(run: Run, signum: int) -> None:
    """Save last.pt after the current step and raise Interrupted."""
    _check_finite(run)
    _close_period(run)
    run.state.train_time_s = _loop_time(run)
    state = _checkpoint_state(run)  # on every rank: it reduces the partial train metrics
    if run.env.is_main:
        save_checkpoint(run.checkpoints / "last.pt", state)
        log.info("stopped by signal %d at step %d; checkpoint saved, continue with --resume", signum, run.state.step)
    barrier()
    raise Interrupted(signum)


# ------------------------------------------------------------------------------------------ checkpoints


def _save_checkpoints(run: Run, val_acc: float | None) -> None:
    """best.pt (by validation accuracy, never test; the last model without a validation split), top-k, last.pt.

    best.pt is written before last.pt: a crash between the two leaves a last.pt whose `best` still names
    the previous best.pt, and resuming re-decides.
    """
    s = run.state
    improved = val_acc is None or s.best_val_acc is None or val_acc > s.best_val_acc
    if improved:
        s.best_val_acc, s.best_step = val_acc, s.step
    dropped = _update_top_k(run, val_acc)
    state = _checkpoint_state(run)  # on every rank: it reduces the partial train metrics
    if not run.env.is_main:
        barrier()
        return
    if improved:
        save_checkpoint(run.checkpoints / "best.pt", state)
    if any(step == s.step for _, step in s.top_k):
        save_checkpoint(run.checkpoints / f"top-{s.step:08d}.pt", state)
    for step in dropped:
        (run.checkpoints / f"top-{step:08d}.pt").unlink(missing_ok=True)
    save_checkpoint(run.checkpoints / "last.pt", state)
    barrier()


def _update_top_k(run: Run, val_acc: float | None) -> list[int]:
    """Add this evaluation to the top-k list; returns the steps whose checkpoints drop out."""
    k, s = run.cfg.train.top_k, run.state
    if not k or val_acc is None:
        return []
    ranked = sorted([*s.top_k, [val_acc, s.step]], key=lambda entry: (-entry[0], entry[1]))
    s.top_k = ranked[:k]
    return [int(step) for _, step in ranked[k:]]


def _checkpoint_state(run: Run) -> dict[str, Any]:
    """Everything to resume from; call it on every rank (rank 0 saves it)."""
    d = run.data
    return {
        "format_version": FORMAT_VERSION,
        "model": run.net.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.schedule.state_dict(),
        "scaler": run.scaler.state_dict(),
        "step": run.state.step,
        "epoch": run.state.step / run.steps_per_epoch,
        "best": {"val_acc": run.state.best_val_acc, "step": run.state.best_step},
        "progress": asdict(run.state),
        "rng": capture_rng(),
        "loader": run.train_loader.state_dict(),
        # The partial interval, summed over ranks: the next row averages the same steps on any world size.
        "metrics": all_reduce_sum(run.train_metrics.state_dict(), run.device),
        "world_size": run.env.world_size,
        "config": config_to_dict(run.cfg),
        "classes": list(d.classes),
        "normalization": d.normalization,
        "in_chans": d.in_chans,
        "image_size": run.cfg.data.resize or d.image_size,
        "num_classes": len(d.classes),
        "train_time_s": run.state.train_time_s,
    }


def _restore(run: Run, ckpt: dict[str, Any]) -> None:
    """Put the run back where `ckpt` was taken (RNG last: building the run consumed random numbers)."""
    check_resume_world_size(ckpt.get("world_size", 1), run.env, run.cfg.dist.batch_size)
    run.net.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.schedule.load_state_dict(ckpt["scheduler"])
    if ckpt["scaler"]:
        run.scaler.load_state_dict(ckpt["scaler"])
    run.train_loader.load_state_dict(ckpt["loader"])  # counts global batches: the same on any world size
    run.state = TrainState(**ckpt["progress"])
    if run.env.is_main:  # the saved sums are over all ranks (add them once); one writer of metrics.jsonl
        run.train_metrics.load_state_dict(ckpt["metrics"])
        truncate_metrics(run.run_dir, run.state.step)
    restore_rng(ckpt["rng"])


def _model_size(run: Run) -> dict[str, Any]:
    """Parameters and multiply-accumulates per image (models.summarize) of the trained network."""

    size = run.cfg.data.resize or run.data.image_size
    net = copy.deepcopy(run.net).cpu().eval()
    try:
        result = summarize(net, (1, run.data.in_chans, size, size))
        return {"params": result.params, "macs": result.macs}
    except Exception as exc:  # the summary is informative only: a finished run must not fail on it
        log.warning("could not count MACs (%s)", exc)
        return {"params": sum(p.numel() for p in net.parameters()), "macs": None}
