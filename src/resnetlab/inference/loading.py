"""A checkpoint as a model: which file a path means, the network with its weights, and where outputs go.

The checkpoint file format is `engine.checkpoint`'s; the network is built here from `resnetlab.models`, as the
checkpoint's config names it, so that reading a checkpoint needs none of the training code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from resnetlab.engine.builders import model_options
from resnetlab.engine.checkpoint import read_checkpoint_and_digest
from resnetlab.engine.config import config_from_dict
from resnetlab.engine.rundir import CHECKPOINTS, CONFIG, checkpoint_file
from resnetlab.errors import UserError
from resnetlab.models import create_model

INFO_KEYS = ("classes", "normalization", "config", "in_chans", "image_size", "num_classes", "step", "epoch", "best")


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a checkpoint, ready for inference, and what to know about it.

    Args:
        path: a checkpoint file, or a run directory (its best checkpoint, `rundir.checkpoint_file`).

    Returns:
        (model in eval mode on the CPU, info) where info holds classes, normalization ({mean, std}),
        config (nested dict), in_chans, image_size, num_classes, step, epoch, best and path (the file read).

    Raises:
        UserError: no such file or run, a corrupt file, or weights that do not fit the model the config names.
    """
    model, info, _ = load_with_digest(path)
    return model, info


def load_with_digest(path: str | Path) -> tuple[nn.Module, dict[str, Any], str | None]:
    """`load_checkpoint`, and the SHA-256 of the file's bytes that its integrity check computed (None for a file
    written before checkpoints were sealed)."""
    path = checkpoint_file(path)
    state, digest = read_checkpoint_and_digest(path)
    cfg = config_from_dict(state["config"])
    # The checkpoint's own weights replace whatever the run started from (model.weights is not loaded).
    model = create_model(cfg.model.name, num_classes=state["num_classes"], in_chans=state["in_chans"],
                         **model_options(cfg.model))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise UserError(f"{path} does not match model {cfg.model.name} ({str(exc).splitlines()[0]})") from None
    model.eval()
    info = {key: state.get(key) for key in INFO_KEYS}
    info["path"] = str(path)
    return model, info, digest


def output_dir(ckpt: Path) -> Path:
    """Where the files of an evaluation go: the run directory of RUN_DIR/checkpoints/x.pt, else the file's folder."""
    ckpt = ckpt.resolve()
    if ckpt.parent.name == CHECKPOINTS and (ckpt.parent.parent / CONFIG).is_file():
        return ckpt.parent.parent
    return ckpt.parent
