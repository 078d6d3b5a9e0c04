"""Which recipe a run starts from without --recipe: the one made for its data set (data.name), said in a log line."""

from __future__ import annotations

import logging
from collections.abc import Sequence

log = logging.getLogger(__name__)

DEFAULT_RECIPE = "fmnist-fast"  # Fashion-MNIST (the default data set), MNIST and image folders
DATA_RECIPES = {"fashion-mnist": "fmnist-fast", "mnist": "fmnist-fast", "cifar10": "cifar10-fast",
                "cifar100": "cifar10-fast"}
_ALIASES = {"cifar-10": "cifar10", "cifar-100": "cifar100", "fmnist": "fashion-mnist"}


def default_recipe(overrides: Sequence[str]) -> str:
    """The recipe for the data set the `key=value` overrides name (the last data.name=...), said in a log line;
    DEFAULT_RECIPE when they name none (Fashion-MNIST) or one without a recipe of its own (an image folder)."""
    data = next((item.partition("=")[2].strip() for item in reversed(overrides)
                 if item.partition("=")[0].strip() == "data.name"), None)
    if data is None:
        return DEFAULT_RECIPE
    key = _ALIASES.get(data.lower(), data.lower())
    name = DATA_RECIPES.get(key, DEFAULT_RECIPE)
    why = f"the recipe for {key}" if key in DATA_RECIPES else "the default recipe"
    log.info("no --recipe: using %s (%s; see 'resnetlab train --list-recipes')", name, why)
    return name
