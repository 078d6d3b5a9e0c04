"""The model zoo: CIFAR ResNets and plain nets, bottleneck CIFAR nets, ImageNet ResNets, one registry.

`list_models(pattern)` names them, `create_model(name, ...)` builds one (optionally from weights),
`cifar_resnet(depth, ...)` builds a CIFAR net of any valid depth, `summarize(model, input_size)` gives
the per-layer table with parameter and MAC totals. `catalog.model_names(pattern)` names the zoo without
importing torch.

Exports are resolved lazily, so that `resnetlab models` (which reads `catalog` only) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ModelSummary": "resnetlab.models.summary",
    "summarize": "resnetlab.models.summary",
    "cifar_resnet": "resnetlab.models.cifar",
    "create_model": "resnetlab.models.registry",
    "list_models": "resnetlab.models.registry",
    "load_weights": "resnetlab.models.registry",
    "register_model": "resnetlab.models.registry",
    "model_names": "resnetlab.models.catalog",
    "get_weights": "resnetlab.models.pretrained",
    "PretrainedWeights": "resnetlab.models.pretrained",
}

__all__ = [
    "ModelSummary",
    "PretrainedWeights",
    "cifar_resnet",
    "create_model",
    "get_weights",
    "list_models",
    "load_weights",
    "model_names",
    "register_model",
    "summarize",
]

if TYPE_CHECKING:  # pragma: no cover
    from resnetlab.models.catalog import model_names
    from resnetlab.models.cifar import cifar_resnet
    from resnetlab.models.pretrained import PretrainedWeights, get_weights
    from resnetlab.models.registry import create_model, list_models, load_weights, register_model
    from resnetlab.models.summary import ModelSummary, summarize


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'resnetlab.models' has no attribute {name!r}")
