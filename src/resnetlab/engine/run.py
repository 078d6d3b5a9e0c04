"""Starting or continuing a run in its directory: never overwrite a run; on --resume, continue it with its own
config."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from resnetlab.engine.checkpoint import read_checkpoint
from resnetlab.engine.config import Config, config_from_dict, config_to_dict
from resnetlab.engine.distributed import barrier
from resnetlab.engine.rundir import CHECKPOINTS, SUMMARY, read_summary
from resnetlab.errors import UserError

log = logging.getLogger(__name__)

# Settings a resumed run may change: they do not alter what is computed (on the same kind of device).
RESUME_MAY_CHANGE = ("train.out_dir", "train.quiet", "train.threads", "train.log_every", "train.device")


def check_run_dir(cfg: Config, resume: bool) -> tuple[Path, dict[str, Any] | None, Config]:
    """The run directory, the checkpoint to resume (or None) and the config to run with.

    Refuses to overwrite a run; for `resume`, reads checkpoints/last.pt and takes the run's own config.
    """
    if not cfg.train.out_dir:
        raise UserError("train.out_dir (--out RUN_DIR) is required: where checkpoints, metrics and summary go")
    run_dir = Path(cfg.train.out_dir).expanduser()
    if not resume:
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise UserError(f"{run_dir} already exists; choose a new --out, or add --resume to continue that run")
        barrier()  # every rank has looked before rank 0 creates it
        return run_dir, None, cfg
    if read_summary(run_dir) is not None:
        raise UserError(f"{run_dir} has already finished ({SUMMARY} exists); train into a new --out")
    last = run_dir / CHECKPOINTS / "last.pt"
    if not last.exists():
        raise UserError(f"nothing to resume: {last} does not exist (train without --resume to start the run)")
    ckpt = read_checkpoint(last)
    return run_dir, ckpt, resume_config(cfg, ckpt["config"])


def resume_config(cfg: Config, saved: dict[str, Any]) -> Config:
    """The run's saved config, with only the RESUME_MAY_CHANGE settings taken from `cfg`."""
    resumed = config_from_dict(saved)
    new, old = _flatten(config_to_dict(cfg)), _flatten(saved)
    ignored = [k for k in new if k not in RESUME_MAY_CHANGE and k != "recipe" and new[k] != old.get(k)]
    if ignored:
        log.warning("resuming with the run's own config; ignoring %d different setting(s): %s",
                    len(ignored), ", ".join(f"{k}={new[k]!r}" for k in ignored[:8]))
    for key in RESUME_MAY_CHANGE:
        section, name = key.split(".")
        setattr(getattr(resumed, section), name, getattr(getattr(cfg, section), name))
    return resumed


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "options":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
