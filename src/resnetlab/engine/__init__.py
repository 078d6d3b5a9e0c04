"""The training engine: config and recipes, the training loop, the checkpoint format, the evaluation loop.

Using a finished run (loading its model, evaluate, predict, export) is `resnetlab.inference`, one layer up.

Exports are resolved lazily, so that `resnetlab train --print-config` does not import the whole stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "train": "resnetlab.engine.trainer",
    "RunResult": "resnetlab.engine.trainer",
    "Config": "resnetlab.engine.config",
    "load_config": "resnetlab.engine.config",
    "format_config": "resnetlab.engine.config",
    "list_recipes": "resnetlab.engine.recipes",
    "read_checkpoint": "resnetlab.engine.checkpoint",
}

__all__ = [
    "Config", "RunResult", "format_config", "list_recipes", "load_config", "read_checkpoint", "train",
]

if TYPE_CHECKING:  # pragma: no cover
    from resnetlab.engine.checkpoint import read_checkpoint
    from resnetlab.engine.config import Config, format_config, load_config
    from resnetlab.engine.recipes import list_recipes
    from resnetlab.engine.trainer import RunResult, train


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'resnetlab.engine' has no attribute {name!r}")
