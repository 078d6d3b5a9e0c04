"""Recipes: the shipped YAML files (src/resnetlab/recipes/NAME.yaml) or the user's, read as nested mappings.

A recipe is a mapping of config sections plus a `description:` line; `extends: OTHER` starts from another recipe
(its own keys win), so variants are data rather than copies. `config.load_config` turns the result into a Config.
Without --recipe a run starts from the recipe made for its data set (`default_recipe`), said in a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from resnetlab.errors import UserError

log = logging.getLogger(__name__)

RECIPE_META_KEYS = ("description", "extends")  # a recipe's keys that are not config sections

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


def _recipe_dir() -> Path:
    return Path(str(resources.files("resnetlab") / "recipes"))


def list_recipes() -> list[tuple[str, str]]:
    """The shipped recipes as (name, description), sorted by name."""
    out = []
    for path in sorted(_recipe_dir().glob("*.yaml"), key=lambda p: p.stem):
        data = read_yaml(path)
        out.append((path.stem, str(data.get("description", ""))))
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a YAML text file (it holds bytes that are not UTF-8 text)") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of config sections (model:, data:, optim:, ...)")
    return data


def _recipe_path(recipe: str) -> Path:
    if recipe.endswith((".yaml", ".yml")) or "/" in recipe:
        path = Path(recipe).expanduser()
        if not path.is_file():
            raise UserError(f"recipe file {recipe} does not exist")
        return path
    path = _recipe_dir() / f"{recipe}.yaml"
    if not path.is_file():
        names = ", ".join(name for name, _ in list_recipes())
        raise UserError(f"unknown recipe {recipe!r}; known recipes: {names} (or pass a YAML file)")
    return path


def resolve_recipe(recipe: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The recipe's nested mapping with its `extends:` chain merged in (the recipe's own keys win)."""
    if recipe in seen:
        raise UserError(f"recipe {recipe!r} extends itself (chain: {' -> '.join((*seen, recipe))})")
    data = read_yaml(_recipe_path(recipe))
    base = data.get("extends")
    merged = resolve_recipe(str(base), (*seen, recipe)) if base else {}
    return _merge(merged, {k: v for k, v in data.items() if k not in RECIPE_META_KEYS})


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
