"""resnetlab: residual networks from He et al. (2016) as a library and a command-line tool.

The public API is re-exported lazily from the modules that define it, so that `import resnetlab` stays cheap:

    import resnetlab
    result = resnetlab.train(resnetlab.load_config("fmnist-fast", ["train.out_dir=runs/fm1"]))
    metrics = resnetlab.evaluate("runs/fm1")                   # best.pt on the test split
    model, info = resnetlab.load_checkpoint("runs/fm1")
    guesses = resnetlab.predict("runs/fm1", ["shoe.png"])
    table = resnetlab.run_sweep("degradation-fmnist", "sweeps/deg")  # every run, then DIR/results.md

Importing resnetlab before torch also sets OMP_WAIT_POLICY=PASSIVE (unless it is set), as the `resnetlab`
command does: OpenMP reads it once, when torch loads, and idle threads that sleep instead of spinning leave a
shared CPU to the work (2x faster training measured on a busy 2-core machine). Import torch after resnetlab, or
set OMP_WAIT_POLICY yourself.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

from resnetlab.version import __version__

if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_EXPORTS = {
    "list_models": "resnetlab.models.registry",
    "create_model": "resnetlab.models.registry",
    "load_dataset": "resnetlab.data.sources",
    "ImageSet": "resnetlab.data.imageset",
    "train": "resnetlab.engine.trainer",
    "load_config": "resnetlab.engine.config",
    "load_checkpoint": "resnetlab.inference.loading",
    "evaluate": "resnetlab.inference.evaluate",
    "predict": "resnetlab.inference.predict",
    "run_sweep": "resnetlab.reports.sweep_run",
}

__all__ = ["ImageSet", "__version__", "create_model", "evaluate", "list_models", "load_checkpoint", "load_config",
           "load_dataset", "predict", "run_sweep", "train"]

if TYPE_CHECKING:  # pragma: no cover
    from resnetlab.data.imageset import ImageSet
    from resnetlab.data.sources import load_dataset
    from resnetlab.engine.config import load_config
    from resnetlab.engine.trainer import train
    from resnetlab.inference.evaluate import evaluate
    from resnetlab.inference.loading import load_checkpoint
    from resnetlab.inference.predict import predict
    from resnetlab.models.registry import create_model, list_models
    from resnetlab.reports.sweep_run import run_sweep


def __getattr__(name: str) -> Any:
    # Each name comes from the module that defines it, never from a package whose submodule of the same name
    # (resnetlab.inference.evaluate) would shadow it once imported.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'resnetlab' has no attribute {name!r}")
