"""resnetlab: residual networks from He et al. (2016) as a library and a command-line tool.

The public API is re-exported lazily so that `import resnetlab` stays cheap for the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from resnetlab.version import __version__

_EXPORTS = {
    "list_models": "resnetlab.models",
    "create_model": "resnetlab.models",
    "load_dataset": "resnetlab.data",
    "ImageSet": "resnetlab.data",
    "train": "resnetlab.engine",
    "load_config": "resnetlab.engine",
    "load_checkpoint": "resnetlab.engine",
    "evaluate": "resnetlab.engine",
}

__all__ = [
    "__version__", "list_models", "create_model", "load_dataset", "ImageSet",
    "train", "load_config", "load_checkpoint", "evaluate",
]

if TYPE_CHECKING:  # pragma: no cover
    from resnetlab.data import ImageSet, load_dataset
    from resnetlab.engine import evaluate, load_checkpoint, load_config, train
    from resnetlab.models import create_model, list_models


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'resnetlab' has no attribute {name!r}")
