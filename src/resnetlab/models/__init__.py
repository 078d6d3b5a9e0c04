"""The model zoo: CIFAR ResNets and plain nets, bottleneck CIFAR nets, ImageNet ResNets, one registry.

`list_models(pattern)` names them, `create_model(name, ...)` builds one (optionally from weights),
`cifar_resnet(depth, ...)` builds a CIFAR net of any valid depth, `summarize(model, input_size)` gives
the per-layer table with parameter and MAC totals.
"""

from __future__ import annotations

from resnetlab.models.cifar import cifar_resnet
from resnetlab.models.registry import create_model, list_models, load_weights, register_model
from resnetlab.models.summary import ModelSummary, summarize

__all__ = [
    "ModelSummary",
    "cifar_resnet",
    "create_model",
    "list_models",
    "load_weights",
    "register_model",
    "summarize",
]
