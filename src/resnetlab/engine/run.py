"""One way to build a run: its directory (new, resumed, or started over), its objects, its checkpoints.

`build_run()` turns a Config into a `Run` (data, network, optimizer, schedule, loaders, hooks), restored from a
checkpoint when resuming; `checkpoint_state()` is everything the next step depends on, so a run interrupted
anywhere and resumed ends with the same weights as one that never stopped (bit-identical on the same CPU kind).
The trainer (trainer.py) steps a Run; lr-find steps one too (experiments/lr_find.py).

Hooks (hooks.py) attach optional techniques to the one training path: those the config turns on
(`techniques.config_hooks`), then the caller's. Each saves and restores its own checkpoint entries.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from resnetlab.data import Loader
from resnetlab.engine import builders, devices, provenance
from resnetlab.engine.checkpoint import FORMAT_VERSION, capture_rng, read_checkpoint, restore_rng
from resnetlab.engine.config import Config, config_to_dict
from resnetlab.engine.distributed import DistEnv, all_reduce_sum, barrier, check_resume_world_size
from resnetlab.engine.hooks import Hook
from resnetlab.engine.metrics import Metrics
from resnetlab.engine.resume import resume_config
from resnetlab.engine.rundir import (
    CHECKPOINTS,
    CONFIG,
    LOCK,
    best_checkpoint,
    clear_run,
    last_checkpoint,
    read_config,
    read_summary,
    run_dir_of,
    truncate_metrics,
    write_config,
)
from resnetlab.engine.runlock import RunLock
from resnetlab.engine.runlog import RunLogger
from resnetlab.engine.runstate import Clock, TrainState
from resnetlab.engine.runtime import Session, StopSignals, seed_everything
from resnetlab.engine.schedule import LRSchedule
from resnetlab.engine.techniques import config_hooks
from resnetlab.engine.weights import apply_weights_defaults
from resnetlab.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Run:
    """Everything one training run works with (built by `build_run`).

    Three names, one network (two with a weight average): `net` is the network whose weights train; `train_net` is
    how the training step calls it; `eval_net` is what validation, selection and the test run.
    """

    cfg: Config
    env: DistEnv
    device: torch.device
    stop: StopSignals
    run_dir: Path | None  # None: nothing is written (lr-find)
    data: builders.Datasets
    net: nn.Module  # the network whose weights train: unwrapped; its parameters are clipped, checked and saved
    train_net: nn.Module  # `net` as the training step calls it: in DDP under torchrun and/or compiled, else `net`
    # the step's arithmetic
    optimizer: torch.optim.Optimizer
    schedule: Any  # LRSchedule, or anything with apply(optimizer, step) -> lr, observe(), state_dict()
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    amp: torch.dtype | None
    # the batches, the length, the counters
    train_loader: Loader
    val_loader: Loader | None
    train_metrics: Metrics
    total_iters: int
    steps_per_epoch: int
    state: TrainState
    hooks: list[Hook] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    logger: RunLogger = field(default_factory=RunLogger.silent)  # rank 0 of a run with a directory: one that writes
    # the loop's own (hooks never see them)
    clock: Clock = field(default_factory=Clock)
    finite: torch.Tensor | None = None  # False once a loss was NaN/inf (checked at logging points only)
    saved_step: int | None = None  # the step of checkpoints/last.pt (None: none saved by this run yet)
    stop_reason: str | None = None  # why the run ends early (a hook's after_validation, early stopping); saved

    @property
    def checkpoints(self) -> Path:
        """RUN_DIR/checkpoints."""
        assert self.run_dir is not None
        return self.run_dir / CHECKPOINTS

    @property
    def eval_net(self) -> nn.Module:
        """The network validated, selected and tested: a hook's (e.g. the weight average), else `net`."""
        for hook in self.hooks:
            model = hook.eval_model(self)
            if model is not None:
                return model
        return self.net


# ---------------------------------------------------------------------------------------- the run directory


def open_run_dir(cfg: Config, resume: bool, resume_from: str | Path | None = None, *, fallback: bool = False,
                 lock: RunLock | None = None) -> tuple[Path, Path | None, Config]:
    """The run directory, the checkpoint file to continue from (or None) and the config to run with.

    A new run refuses a directory that holds anything. `resume` continues from checkpoints/last.pt (or the
    checkpoint `resume_from`) with the run's own config (`lock`: how the lock was taken, which tells a folder that
    was empty from one where an attempt died before writing its config.yaml); with `fallback`, a last.pt that
    fails its check gives way to the newest checkpoint of the run that passes it. A run that died before its
    first checkpoint is started over from its config.yaml, deleting only its run files (a folder holding anything
    else is refused). Call it on the main process, holding the lock: what the folder holds is read only then.
    """
    run_dir = run_dir_of(cfg)
    if not (resume or resume_from):
        if run_dir.is_dir() and any(p.name != LOCK for p in run_dir.iterdir()):
            raise UserError(f"{run_dir} already exists; choose a new --out, or add --resume to continue that run")
        return run_dir, None, cfg
    if read_summary(run_dir, strict=False) is not None:
        raise UserError(f"{run_dir} has already finished (summary.json exists); train into a new --out")
    source = Path(resume_from) if resume_from else last_checkpoint(run_dir)
    if not source.is_file():
        if resume_from:
            raise UserError(f"--resume-from {source} does not exist; pass a checkpoint file such as "
                            f"{best_checkpoint(run_dir)}")
        return run_dir, None, _start_over(run_dir, cfg, lock)
    source, ckpt = _readable_checkpoint(run_dir, source, fallback and not resume_from)
    return run_dir, source, resume_config(cfg, ckpt["config"])


def missing_run_error(run_dir: Path) -> UserError:
    """`--resume` on a folder that does not exist: the error, naming the nearest run folders beside it."""
    parent = run_dir.parent
    if not parent.is_dir():
        return UserError(f"--resume: {run_dir} does not exist (nor does {parent}); give the folder of the run to "
                         "continue, or drop --resume to start a new run")
    runs = sorted(p.name for p in parent.iterdir() if p.is_dir() and ((p / CONFIG).is_file() or (p / CHECKPOINTS)
                                                                        .is_dir()))
    near = difflib.get_close_matches(run_dir.name, runs, n=3, cutoff=0.5)
    hint = (f"the nearest run folders are {', '.join(str(parent / name) for name in near)}" if near else
            f"no run folder in {parent} has a similar name" + (f" (it holds {', '.join(runs[:3])})" if runs else ""))
    return UserError(f"--resume: {run_dir} does not exist; {hint}; drop --resume to start a new run")


def _readable_checkpoint(run_dir: Path, source: Path, fallback: bool) -> tuple[Path, dict[str, Any]]:
    """The checkpoint to resume from and its content: `source`, or with `fallback` (when `source` fails its check)
    the run's newest checkpoint that passes it."""
    try:
        return source, read_checkpoint(source)
    except UserError as exc:
        if not fallback:
            raise UserError(f"{exc}; add --fallback to continue from the run's newest good checkpoint") from None
        damaged = exc
    good = []
    for path in sorted((run_dir / CHECKPOINTS).glob("*.pt")):
        if path != source:
            with contextlib.suppress(UserError):
                good.append((read_checkpoint(path), path))
    if not good:
        raise UserError(f"{damaged}; --fallback found no other good checkpoint in {run_dir / CHECKPOINTS}")
    ckpt, path = max(good, key=lambda item: int(item[0].get("step") or 0))
    log.warning("%s; --fallback: continuing from %s (step %s)", damaged, path, ckpt.get("step"))
    return path, ckpt


def _start_over(run_dir: Path, cfg: Config, lock: RunLock | None) -> Config:
    """A run without a checkpoint to resume (it died before its first one, e.g. a requeued Slurm job): delete its
    run files, and only those, and start it again from its config.yaml."""
    has_config = (run_dir / CONFIG).is_file()
    tried = (run_dir / LOCK).is_file() and not (lock is not None and lock.made_lock)  # an attempt took the lock
    if not has_config and not tried:
        raise UserError(f"--resume: {run_dir} holds no run to continue (no config.yaml, no checkpoint); drop "
                        "--resume to start a new run there")
    resumed = resume_config(cfg, config_to_dict(read_config(run_dir))) if has_config else cfg
    clear_run(run_dir)  # refuses, deleting nothing, a folder with files resnetlab did not write
    log.warning("%s has no checkpoint yet (the run stopped before its first one); starting it over%s", run_dir,
                " from its config.yaml" if has_config else "")
    return resumed


# ------------------------------------------------------------------------------------------- building


def build_run(cfg: Config, session: Session, run_dir: Path | None, ckpt: dict[str, Any] | None,
              hooks: Sequence[Hook] = (), *, with_test: bool = True, data: builders.Datasets | None = None) -> Run:
    """Data, network, optimizer, schedule, loaders and hooks; restored from `ckpt` when resuming.

    `session`: where it trains (`runtime.session`). With `run_dir` None nothing is written (no config.yaml,
    checkpoints or metrics) and the logger is silent; `with_test=False` does not load the test split (lr-find never
    tests); `data` replaces the config's data set (benchmarks).
    """
    env, device = session.env, session.device
    seed_everything(cfg.train.seed)
    cfg = apply_weights_defaults(cfg)  # torchvision weights: their image size unless the config sets one
    data = data or builders.build_data(cfg, env, with_test=with_test)
    net = builders.build_model(cfg.model, in_chans=data.in_chans, num_classes=len(data.classes))
    net = builders.place_model(net, cfg, env, device)
    loader_args = {"device": device, "normalization": data.normalization, "rank": env.rank,
                   "world_size": env.world_size}
    train_loader = builders.make_loader(data.train, cfg, train=True, **loader_args)
    val_loader = builders.make_loader(data.val, cfg, train=False, **loader_args) if data.val is not None else None
    total_iters = cfg.train.iters or cfg.train.epochs * len(train_loader)
    lr = builders.scaled_lr(cfg, env.world_size)
    amp = devices.amp_dtype(cfg.train.amp, device)
    compiled = devices.use_compile(cfg.train.compile, device)
    run = Run(cfg=cfg, env=env, device=device, stop=session.stop, run_dir=run_dir, data=data, net=net,
              train_net=_wrap(net, env, device, compiled, cfg.train.compile),
              optimizer=builders.build_optimizer(net, cfg.optim, lr, device),
              schedule=LRSchedule(cfg.schedule, lr, total_iters), scaler=_grad_scaler(device, amp),
              criterion=nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing), amp=amp,
              train_loader=train_loader, val_loader=val_loader, train_metrics=Metrics(len(data.classes), device=device),
              total_iters=total_iters, steps_per_epoch=len(train_loader), state=TrainState(),
              hooks=[*config_hooks(cfg), *hooks], finite=torch.ones((), dtype=torch.bool, device=device),
              provenance=provenance.collect(device, amp=devices.amp_name(amp), compiled=compiled))
    for hook in run.hooks:
        hook.setup(run)
    if ckpt is not None:
        restore(run, ckpt)
    elif run_dir is not None and env.is_main:
        write_config(run_dir, cfg)
    barrier()
    if run_dir is not None:
        run.logger = RunLogger(run_dir if env.is_main else None, total_iters, run.state.step, cfg.train.quiet)
    return run


def _grad_scaler(device: torch.device, amp: torch.dtype | None) -> torch.amp.GradScaler:
    # fp16 needs loss scaling (its range is small); bf16 and float32 do not, and a disabled scaler is a no-op.
    enabled = amp == torch.float16
    return torch.amp.GradScaler(device.type if enabled else "cpu", enabled=enabled)


def _wrap(net: nn.Module, env: DistEnv, device: torch.device, compiled: bool, setting: bool | str = True) -> nn.Module:
    """`net` for training: in DDP under torchrun, compiled (in train.compile's mode, when it names one) if asked."""
    model = net
    if env.distributed:
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(model, mode=devices.compile_mode(setting)) if compiled else model


# ------------------------------------------------------------------------------------------ checkpoints


def checkpoint_state(run: Run) -> dict[str, Any]:
    """Everything to resume from; call it on every rank (rank 0 saves it). Hooks add to it or edit it
    (`Hook.on_save_checkpoint`: the weight average saves itself as "model", the trained weights as "train_model")."""
    d = run.data
    ckpt = {
        "format_version": FORMAT_VERSION,
        "model": run.net.state_dict(),  # the evaluated network (a hook's replaces it): what evaluate etc. load
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
        "hooks": {hook.name: hook.state_dict() for hook in run.hooks},
        "world_size": run.env.world_size,
        "config": config_to_dict(run.cfg),
        "classes": list(d.classes),
        "normalization": d.normalization,
        "in_chans": d.in_chans,
        "image_size": run.cfg.data.resize or d.image_size,
        "num_classes": len(d.classes),
        "train_time_s": run.state.train_time_s,
        "provenance": run.provenance,
        "stop_reason": run.stop_reason,  # a hook ended the run here (early stopping): resuming only tests it
    }
    for hook in run.hooks:
        hook.on_save_checkpoint(run, ckpt)
    return ckpt


def restore(run: Run, ckpt: dict[str, Any]) -> None:
    """Put the run back where `ckpt` was taken (RNG last: building the run consumed random numbers)."""
    check_resume_world_size(ckpt.get("world_size", 1), run.env, run.cfg.dist.batch_size)
    provenance.check_resume(ckpt.get("provenance"), run.provenance)
    ckpt = dict(ckpt)  # hooks undo their edits on a copy (the weight average puts "train_model" back as "model")
    for hook in reversed(run.hooks):
        hook.on_load_checkpoint(run, ckpt)
    run.net.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.schedule.load_state_dict(ckpt["scheduler"])
    if ckpt["scaler"]:
        run.scaler.load_state_dict(ckpt["scaler"])
    run.train_loader.load_state_dict(ckpt["loader"])  # counts global batches: the same on any world size
    run.state = TrainState(**ckpt["progress"])
    run.saved_step = run.state.step
    run.stop_reason = ckpt.get("stop_reason")
    saved_hooks = ckpt.get("hooks", {})
    for hook in run.hooks:
        if hook.name in saved_hooks:
            hook.load_state_dict(saved_hooks[hook.name])
    if run.env.is_main:  # the saved sums are over all ranks (add them once); one writer of metrics.jsonl
        run.train_metrics.load_state_dict(ckpt["metrics"])
        if run.run_dir is not None:
            truncate_metrics(run.run_dir, run.state.step)
    restore_rng(ckpt["rng"])
