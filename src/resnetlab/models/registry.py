"""The model registry: a plain dict from name to builder (as torchvision's `_api.py`).

Builders register themselves with `@register_model`; registering a name twice is an error.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from torch import nn

from resnetlab.errors import UserError

ModelBuilder = Callable[..., nn.Module]
_MODELS: dict[str, ModelBuilder] = {}


def register_model(fn: ModelBuilder) -> ModelBuilder:
    """Register `fn` under its `__name__`; a second registration of the same name raises."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the shell-style `pattern`, in natural order (resnet20 before resnet110)."""
    _import_families()
    names = [n for n in _MODELS if fnmatch.fnmatchcase(n, pattern)]
    return sorted(names, key=_natural_key)


def get_builder(name: str) -> ModelBuilder:
    """The builder registered as `name`, or a UserError that lists the known names."""
    _import_families()
    if name not in _MODELS:
        raise UserError(f"unknown model {name!r}; known models: {' '.join(list_models())}")
    return _MODELS[name]


def _natural_key(name: str) -> tuple[str, int]:
    stem = name.rstrip("0123456789")
    digits = name[len(stem):]
    return stem, int(digits) if digits else -1


def _import_families() -> None:
    # Importing the family modules runs their @register_model decorators.
    from resnetlab.models import cifar, imagenet  # noqa: F401
