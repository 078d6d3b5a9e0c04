"""The training loop: `train(cfg)` builds a run, `fit()` trains it, `finish()` tests it and writes the summary.

Reading order: train() -> fit() -> train_one_epoch() -> train_step(); log_interval() every `train.log_every`
steps and validate_and_checkpoint() at every evaluation point; finish() at the end. Training and evaluation
share one `Metrics` accumulator type; the train accumulator covers the steps since the previous metrics row and
syncs with the host only there (no `.item()` per step). Building a run and its checkpoints: run.py; where the
process trains (signals, device, torchrun): runtime.session; what is a hook and what stays in this loop: hooks.py.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnetlab.engine import builders
from resnetlab.engine.accumulate import gradient_sync, micro_batches
from resnetlab.engine.checkpoint import read_checkpoint, save_checkpoint
from resnetlab.engine.config import Config, rows_every
from resnetlab.engine.distributed import DistEnv, any_rank, barrier, broadcast_object
from resnetlab.engine.evaluate import evaluate_model
from resnetlab.engine.hooks import Hook
from resnetlab.engine.preflight import check_memory
from resnetlab.engine.run import Run, build_run, checkpoint_state, missing_run_error, open_run_dir
from resnetlab.engine.rundir import (
    BEST,
    LAST,
    remove_stale_temp_files,
    run_dir_of,
    write_summary,
)
from resnetlab.engine.runlock import RunLock, lock_run_dir
from resnetlab.engine.runlog import running_window
from resnetlab.engine.runtime import Session, session
from resnetlab.errors import Interrupted, TrainingFailed, UserError
from resnetlab.models import summarize

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What `train()` returns: the run directory, summary.json's content, and whether this is rank 0."""

    run_dir: Path
    summary: dict[str, Any]
    is_main_process: bool


# ------------------------------------------------------------------------------------------- train()


def train(cfg: Config, *, resume: bool = False, resume_from: str | Path | None = None, fallback: bool = False,
          hooks: Sequence[Hook] = ()) -> RunResult:
    """Train a model as `cfg` says and test it once at the end.

    Args:
        cfg: the run configuration (`load_config`); `train.out_dir` is the run directory.
        resume: continue the run in `train.out_dir` from checkpoints/last.pt with the run's own config (a run
            that stopped before its first checkpoint starts over).
        resume_from: continue from this checkpoint instead (e.g. checkpoints/best.pt when last.pt is damaged).
        fallback: with `resume`, a last.pt that fails its integrity check gives way to the run's newest checkpoint
            that passes it (named in a warning); without it such a last.pt is an error.
        hooks: techniques attached to the training path (see `resnetlab.engine.hooks.Hook`), after those the
            config turns on.

    Returns:
        RunResult(run_dir, summary (summary.json's content), is_main_process).

    Raises:
        UserError: an impossible setting, an existing run directory without `resume`, one that another process
            trains, missing data.
        TrainingFailed: the loss became NaN or infinite (last.pt keeps the last good state), or the disk is full.
        Interrupted: SIGINT/SIGTERM arrived; last.pt was saved, `resume=True` continues.
    """
    wall_start = time.perf_counter()
    check_memory(cfg)  # a size that cannot fit is refused with its figure, not by the out-of-memory killer
    with session(cfg) as sess:  # stop signals first: a signal from now on stops cleanly
        run_dir = run_dir_of(cfg)
        if sess.env.is_main and resume and not resume_from and not run_dir.exists():
            raise missing_run_error(run_dir)  # a mistyped path: nothing is created
        with lock_run_dir(run_dir) if sess.env.is_main else contextlib.nullcontext() as lock:
            summary = _train_locked(cfg, sess, lock, wall_start, (resume, resume_from, fallback, hooks))
    return RunResult(run_dir=run_dir, summary=summary, is_main_process=sess.env.is_main)


def _train_locked(cfg: Config, sess: Session, lock: RunLock | None, wall_start: float,
                  how: tuple[bool, str | Path | None, bool, Sequence[Hook]]) -> dict[str, Any]:
    """Decide (new run, resume, start over) holding the run directory's lock, then build, train and test the run.

    A command refused before training starts (a bad setting, missing data, NaN weights, a signal) removes what it
    added: the lock file, and the folder and run files when the folder was empty (`RunLock.undo`)."""
    resume, resume_from, fallback, hooks = how
    started = False
    try:
        source, cfg = _open(cfg, sess.env, resume, resume_from, fallback, lock)
        with sess.settings(cfg):  # the resumed run's own settings (threads, deterministic mode)
            ckpt = read_checkpoint(source) if source is not None else None
            run = build_run(cfg, sess, run_dir_of(cfg), ckpt, hooks)
            try:
                _stop_before_training(run)
                if run.state.step == 0:
                    _check_start(run)
                started = True
                fit(run)
                return finish(run, wall_start)
            finally:
                run.logger.close()  # before a refused run's files are removed (TensorBoard writes in a thread)
    except (UserError, TrainingFailed, Interrupted):
        if lock is not None and not started:
            lock.undo()
        raise


def _stop_before_training(run: Run) -> None:
    """A signal that came while the run was built (the data loading) stops it before its first step."""
    if run.stop.signum is not None:
        raise Interrupted(run.stop.signum, f"interrupted by signal {run.stop.signum} before training (re)started at "
                          f"step {run.state.step}; nothing new was saved: run the same command again")


def _open(cfg: Config, env: DistEnv, resume: bool, resume_from: str | Path | None, fallback: bool,
          lock: RunLock | None) -> tuple[Path | None, Config]:
    """Rank 0 decides (new run, resume, or start over) and tells the other ranks: the checkpoint and the config."""
    decision = None
    if env.is_main:
        run_dir, source, cfg = open_run_dir(cfg, resume, resume_from, fallback=fallback, lock=lock)
        remove_stale_temp_files(run_dir)
        if source is None:
            builders.drop_foreign_options(cfg.model)
        decision = (str(source) if source else None, cfg)
    source, cfg = broadcast_object(decision)  # type: ignore[misc]
    return (Path(source) if source else None), cfg


def fit(run: Run) -> None:
    """Train for `run.total_iters` iterations (or until a hook stops the run), logging and evaluating."""
    _announce(run)
    run.clock.start(run.state.train_time_s, run.state.step)
    while run.state.step < run.total_iters and run.stop_reason is None:
        train_one_epoch(run)


def train_one_epoch(run: Run) -> None:
    """The remaining batches of the loader's current epoch (or fewer, when the run ends or is stopped)."""
    set_train_mode(run)
    for x, y in run.train_loader:
        train_step(run, x, y)
        step = run.state.step
        run.logger.step(step)
        evaluating = _is_eval_point(run, step)
        if step % log_every(run) == 0 and not evaluating:
            log_interval(run)
        elif run.logger.wants_message(time.perf_counter() - run.clock.last_message):
            _progress_message(run)
        if evaluating:
            validate_and_checkpoint(run)
            set_train_mode(run)
        signum = _stop_signal(run)
        if signum is not None:
            _interrupt(run, signum)
        if step >= run.total_iters or run.stop_reason is not None:
            return


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One optimizer step on the batch (x, y); returns the loss (a device tensor: nothing here waits for it).

    With train.accumulate=K the batch is cut into K micro-batches whose gradients are summed (accumulate.py).
    """
    run.state.lr = run.schedule.apply(run.optimizer, run.state.step)
    run.optimizer.zero_grad(set_to_none=True)
    parts = micro_batches(x, y, run.cfg.train.accumulate)
    losses = []
    for i, (xs, ys, share) in enumerate(parts):
        with gradient_sync(run.train_net, sync=i == len(parts) - 1):
            with torch.autocast(run.device.type, dtype=run.amp, enabled=run.amp is not None):
                logits = run.train_net(xs)  # (B / K, classes)
                loss = run.criterion(logits, ys)
            run.scaler.scale(loss * share if len(parts) > 1 else loss).backward()
        run.train_metrics.update(logits, ys, loss)
        losses.append(loss)
    loss = losses[0] if len(losses) == 1 else sum(share * part.detach() for (_, _, share), part in zip(
        parts, losses, strict=True))
    for hook in run.hooks:
        hook.after_backward(run)
    if run.cfg.train.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.net.parameters(), run.cfg.train.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.finite &= torch.isfinite(loss.detach())
    run.state.step += 1
    run.clock.period_images += x.shape[0] * run.env.world_size
    for hook in run.hooks:
        hook.after_step(run, loss)
    return loss


def log_interval(run: Run) -> None:
    """Write the metrics row of the steps since the previous row: training loss and accuracy, lr, images/s."""
    run.logger.row(_close_row(run))
    run.clock.last_message = time.perf_counter()
    run.clock.start_period(run.state.step)


def _close_row(run: Run) -> dict[str, Any]:
    """The training numbers of the steps since the previous row (the accumulator starts over)."""
    _check_finite(run)
    period_s, period_images = _close_period(run)
    train = run.train_metrics.compute()
    run.train_metrics.reset()
    run.clock.last_row = (train["loss"], train["acc"])
    run.state.final_train_acc = train["acc"]
    run.state.train_time_s = run.clock.loop_time()
    row = {"step": run.state.step, "epoch": round(run.state.step / run.steps_per_epoch, 4), "lr": run.state.lr,
           "train_loss": train["loss"], "train_acc": train["acc"], "val_loss": None, "val_acc": None,
           "images_per_s": period_images / max(period_s, 1e-9), "time_s": run.state.train_time_s}
    for hook in run.hooks:
        row.update(hook.metrics_row(run))  # e.g. train.grad_norms
    return row


def validate_and_checkpoint(run: Run) -> None:
    """The metrics row with the validation split's loss and accuracy; update best/top-k, save last.pt."""
    row = _close_row(run)
    val = None
    if run.val_loader is not None:
        val = evaluate_model(run.eval_net, run.val_loader, num_classes=len(run.data.classes), amp_dtype=run.amp,
                             progress=run.logger.interactive, what="validation")
        row.update(val_loss=val["loss"], val_acc=val["acc"])
    run.schedule.observe(val["loss"] if val else None)
    for hook in run.hooks:  # before the checkpoints, which save the hooks' state
        reason = hook.after_validation(run, val)
        if reason and run.stop_reason is None:  # e.g. early stopping
            run.stop_reason = reason
            run.logger.info("%s", reason)
    run.logger.row(row)
    run.clock.last_message = time.perf_counter()
    _save_checkpoints(run, val["acc"] if val else None)
    run.clock.start_period(run.state.step)


def finish(run: Run, wall_start: float) -> dict[str, Any]:
    """Test the best-validation and the final model once, then write summary.json (last: it means done).

    The test runs in full precision, as `resnetlab evaluate` does, whatever autocast trained the model (train.amp:
    auto is bf16 on AMX/AVX512_BF16 CPUs): summary.json's test numbers are those `evaluate` gives on best.pt.
    """
    assert run.data.test is not None and run.run_dir is not None
    test_loader = builders.make_loader(run.data.test, run.cfg, train=False, device=run.device,
                                       normalization=run.data.normalization, rank=run.env.rank,
                                       world_size=run.env.world_size)
    test = {"num_classes": len(run.data.classes), "amp_dtype": None, "tta": run.cfg.eval.tta,
            "progress": run.logger.interactive, "what": "test"}
    batches = test_loader if run.env.distributed else _until_stopped(test_loader, run)
    final = evaluate_model(run.eval_net, batches, **test)
    _stop_if_signalled(run)
    best = final
    if run.state.best_step != run.state.step:
        best_net = copy.deepcopy(run.eval_net)
        best_net.load_state_dict(read_checkpoint(run.checkpoints / BEST)["model"])  # the evaluated weights
        best = evaluate_model(best_net, batches, **test)
        _stop_if_signalled(run)
    summary = _summary(run, best, final, wall_start)
    if run.env.is_main:
        run.logger.close()  # the bar stays at its last state; TensorBoard's last events are flushed
        write_summary(run.run_dir, summary)
        selected = f"best-validation model, step {run.state.best_step}" if run.val_loader is not None else \
            "final model; no validation split"
        both = f", {100 * summary['test_acc_final']:.2f}% (final model)" if run.val_loader is not None else ""
        run.logger.info("test accuracy %.2f%% (%s)%s; %s", 100 * summary["test_acc"], selected, both, run.run_dir)
    return summary


class _until_stopped:  # noqa: N801 (used like a function: the loader's batches until a stop signal)
    """The batches of `loader` until SIGINT/SIGTERM asks the run to stop (the final test then ends early)."""

    def __init__(self, loader: Any, run: Run) -> None:
        self.loader, self.run = loader, run

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        for batch in self.loader:
            if self.run.stop.signum is not None:
                return
            yield batch


def _stop_if_signalled(run: Run) -> None:
    """During the final test, a stop signal ends the run with the line of a stop during training: last.pt holds
    the final step, so --resume only tests (as `resnetlab evaluate` would)."""
    signum = _agreed_signal(run)
    if signum is not None:
        raise Interrupted(signum, _interrupted_message(run, signum))


def _summary(run: Run, best: dict[str, Any], final: dict[str, Any], wall_start: float) -> dict[str, Any]:
    s, cfg = run.state, run.cfg
    return {
        "best_val_acc": s.best_val_acc, "best_step": s.best_step,
        "test_acc": best["acc"], "test_loss": best["loss"], "test_acc_final": final["acc"],
        "test_loss_final": final["loss"], "final_train_acc": s.final_train_acc,
        **_model_size(run), "steps": s.step, "epochs": round(s.step / run.steps_per_epoch, 4),
        "train_time_s": s.train_time_s, "wall_time_s": time.perf_counter() - wall_start,
        "images_per_s": s.images_seen / max(s.step_time_s, 1e-9),
        "model": cfg.model.name, "data": cfg.data.name, "recipe": cfg.recipe, "seed": cfg.train.seed,
        "device": str(run.device), "world_size": run.env.world_size, "stopped_early": run.stop_reason,
        "amp": run.provenance.get("amp"), "compile": run.provenance.get("compile"), "provenance": run.provenance,
    }


# -------------------------------------------------------------------------------------- loop helpers


def _announce(run: Run) -> None:
    d, cfg = run.data, run.cfg
    val = len(d.val) if d.val is not None else 0
    run.logger.info("%s on %s (%d train / %d val / %d test, %d classes), %s, %d threads, amp %s, compile %s; %d "
                    "iterations (%.2f epochs of %d, batch %d)", cfg.model.name, cfg.data.name, len(d.train), val,
                    len(d.test) if d.test is not None else 0, len(d.classes), run.device, torch.get_num_threads(),
                    run.provenance.get("amp"), "on" if run.provenance.get("compile") else "off", run.total_iters,
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
        run.logger.info("no validation split (data.val_size=0): %s is the last model, and the test accuracy "
                        "reported is the final model's", BEST)


def set_train_mode(run: Run) -> None:
    """The model in training mode, BatchNorm layers in eval mode when train.freeze_bn; then the hooks' modes
    (`Hook.on_train_mode`: fine-tuning's frozen backbone)."""
    run.train_net.train()
    if run.cfg.train.freeze_bn:
        # BatchNorm in eval mode normalizes with, and keeps, its running statistics (fine-tuning, small batches).
        for module in run.net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    for hook in run.hooks:
        hook.on_train_mode(run)


def _is_eval_point(run: Run, step: int) -> bool:
    every = run.cfg.train.eval_every or run.steps_per_epoch
    return step % every == 0 or step >= run.total_iters or run.stop_reason is not None


def log_every(run: Run) -> int:
    """Steps between metrics rows (train.log_every, `auto` resolved for this run's length)."""
    return rows_every(run.cfg.train.log_every, run.total_iters)


def _close_period(run: Run) -> tuple[float, int]:
    """Add the training steps since the period started to the throughput totals; returns (seconds, images)."""
    seconds, images = run.clock.period_seconds(), run.clock.period_images
    run.state.step_time_s += seconds
    run.state.images_seen += images
    return seconds, images


def _progress_message(run: Run) -> None:
    """A progress line between metrics rows (no bar: stderr is not a terminal); the running interval's numbers."""
    _check_finite(run)
    train = run.train_metrics.compute()
    steps = run.state.step - run.clock.period_step
    loss, acc = running_window((train["loss"], train["acc"]), run.clock.last_row, steps, log_every(run))
    run.logger.progress({"step": run.state.step, "lr": run.state.lr, "train_loss": loss, "train_acc": acc,
                         "images_per_s": run.clock.period_images / max(run.clock.period_seconds(), 1e-9)})
    run.clock.last_message = time.perf_counter()


def _check_finite(run: Run) -> None:
    """Raise TrainingFailed (on every rank) if a loss since the last check, a weight or a BN statistic is NaN/inf."""
    assert run.finite is not None
    bad = any_rank(not bool(run.finite & _weights_finite(run.net)), run.device)
    if bad:
        raise TrainingFailed(f"the loss became NaN or infinite before step {run.state.step} (lr {run.state.lr:.3g})"
                             f"{_saved_state(run)}; lower optim.lr or set train.grad_clip")


def _saved_state(run: Run) -> str:
    """What a failed run keeps: the checkpoint that exists (and its step), or that nothing was saved."""
    if run.run_dir is None:
        return ""
    if run.saved_step is None:
        return "; no checkpoint was saved yet (nothing to resume: the run must start over)"
    return f"; {run.checkpoints / LAST} keeps the last good state (step {run.saved_step})"


def _check_start(run: Run) -> None:
    """A run whose weights are NaN or infinite before its first step fails at once, saying so (no lr is to blame)."""
    if not bool(_weights_finite(run.net)):
        raise TrainingFailed(f"the starting weights hold NaN or infinite values (model {run.cfg.model.name}, "
                             f"weights {run.cfg.model.weights or 'initialised'}); nothing was trained or saved")


def _weights_finite(net: nn.Module) -> torch.Tensor:
    """A 0-d bool tensor: every floating-point weight and buffer (BatchNorm statistics) of `net` is finite."""
    tensors = [t.detach() for t in (*net.parameters(), *net.buffers()) if t.is_floating_point()]
    return torch.stack([t.isfinite().all() for t in tensors]).all()


def _stop_signal(run: Run) -> int | None:
    """The signal that asks this run to stop, agreed by all ranks (checked every step in one process, at the
    metrics rows under torchrun)."""
    if run.env.distributed and run.state.step % log_every(run):
        return None
    return _agreed_signal(run)


def _agreed_signal(run: Run) -> int | None:
    """This process's stop signal; under torchrun, one all ranks agree on (SIGTERM for a rank that got none)."""
    signum = run.stop.signum
    if not run.env.distributed:
        return signum
    return (signum or int(signal.SIGTERM)) if any_rank(signum is not None, run.device) else None


def _interrupt(run: Run, signum: int) -> None:
    """Save last.pt after the current step and raise Interrupted."""
    _check_finite(run)
    _close_period(run)
    run.state.train_time_s = run.clock.loop_time()
    state = checkpoint_state(run)  # on every rank: it reduces the partial train metrics
    if run.env.is_main and run.run_dir is not None:
        save_checkpoint(run.checkpoints / LAST, state)
    run.saved_step = run.state.step if run.run_dir is not None else None
    barrier()
    raise Interrupted(signum, _interrupted_message(run, signum))


def _interrupted_message(run: Run, signum: int) -> str:
    where = f"checkpoint saved ({run.checkpoints / LAST}), continue with --resume (Python: resume=True)" \
        if run.run_dir else "nothing saved"
    return f"interrupted by signal {signum} at step {run.state.step}; {where}"


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
    state = checkpoint_state(run)  # on every rank: it reduces the partial train metrics
    if not run.env.is_main or run.run_dir is None:
        run.saved_step = s.step if run.run_dir is not None else None
        barrier()
        return
    if improved:
        save_checkpoint(run.checkpoints / BEST, state)
    if any(step == s.step for _, step in s.top_k):
        save_checkpoint(run.checkpoints / f"top-{s.step:08d}.pt", state)
    for step in dropped:
        (run.checkpoints / f"top-{step:08d}.pt").unlink(missing_ok=True)
    save_checkpoint(run.checkpoints / LAST, state)
    run.saved_step = s.step
    barrier()


def _update_top_k(run: Run, val_acc: float | None) -> list[int]:
    """Add this evaluation to the top-k list; returns the steps whose checkpoints drop out."""
    k, s = run.cfg.train.top_k, run.state
    if not k or val_acc is None:
        return []
    ranked = sorted([*s.top_k, [val_acc, s.step]], key=lambda entry: (-entry[0], entry[1]))
    s.top_k = ranked[:k]
    return [int(step) for _, step in ranked[k:]]


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
