"""One checkpoint format: a dict of tensors and plain Python values, written atomically.

This module is the file format only: the model of a checkpoint is built by `resnetlab.inference.loading`.

Only tensors and plain values go in, so `torch.load(weights_only=True)` reads it: loading a checkpoint
never runs code. The file carries the SHA-256 of what torch.save wrote (models/integrity.py), checked on every
read before anything is unpickled: a changed byte is a one-line error naming the file.
Keys (FORMAT_VERSION 1): model (state dict, unwrapped from DDP/compile), optimizer,
scheduler, scaler, step, epoch, best, rng, loader, metrics, train_time_s, config (plain nested dict),
classes, normalization ({mean, std} as plain lists), in_chans, image_size, num_classes, format_version,
world_size (the processes that trained it; with dist.batch_size=global any number may resume it).
"""

from __future__ import annotations

import io
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnetlab.engine.rundir import BEST, CHECKPOINTS, atomic_write
from resnetlab.errors import UserError
from resnetlab.models.integrity import seal, verify
from resnetlab.models.registry import unreadable_reason

FORMAT_VERSION = 1
REQUIRED_KEYS = ("model", "config", "classes", "normalization", "in_chans", "num_classes", "format_version")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` to `path` atomically (rundir.atomic_write): a reader or a crash sees the old file or the new one.

    Raises:
        TrainingFailed: the disk is full (the previous file is kept).
        UserError: the folder cannot be written.
    """
    buffer = io.BytesIO()  # serialized first: a full disk then fails in one plain write, with its errno
    torch.save(state, buffer)
    return atomic_write(path, seal(buffer.getbuffer()))  # its SHA-256 goes with it, checked on every load


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict at `path`, on the CPU, read with `weights_only=True`.

    Raises:
        UserError: the file is missing, truncated, corrupt or not a resnetlab checkpoint.
    """
    return read_checkpoint_and_digest(path)[0]


def read_checkpoint_and_digest(path: str | Path) -> tuple[dict[str, Any], str | None]:
    """`read_checkpoint`, and the SHA-256 of the file's bytes that its integrity check computed (None for a file
    written before checkpoints were sealed): what an evaluation records about the file it scored."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a directory; pass a .pt file (or the run directory where a run "
                        "directory is accepted)")
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    # a changed byte is an error naming the file, before anything is unpickled
    digest = verify(path, instead=f"use another one (e.g. {CHECKPOINTS}/{BEST}) or retrain")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zipfile/pickle/EOF/RuntimeError all mean "not a readable checkpoint"
        raise UserError(unreadable_reason(path, exc, "resnetlab checkpoint", f"use another one (e.g. "
                                          f"{CHECKPOINTS}/{BEST}, or --resume-from it) or retrain")) from None
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED_KEYS):
        raise UserError(f"{path} is not a resnetlab checkpoint (a state dict alone goes to --weights)")
    if state["format_version"] > FORMAT_VERSION:
        raise UserError(f"{path} has checkpoint format {state['format_version']}; upgrade resnetlab to read it")
    return state, digest


# ------------------------------------------------------------------------------------------------ RNG


def capture_rng() -> dict[str, Any]:
    """Every global random state (python, numpy, torch, cuda) as tensors and plain lists."""
    version, mt_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(mt_state), gauss],
        "numpy": [np_name, torch.from_numpy(np.asarray(np_keys, dtype=np.int64)), int(np_pos),
                  int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Restore what `capture_rng()` returned."""
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # One state per GPU the saving process saw; a run resumed on a machine with fewer GPUs restores those.
        for index, gpu_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(gpu_state, index)
