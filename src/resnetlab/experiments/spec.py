"""Sweep specs: a base recipe, fixed overrides, a grid over dotted config keys, and seeds.

A spec is a small YAML file (shipped ones live in `resnetlab/sweeps/`, addressed by name):

```yaml
name: my-sweep               # optional: the title of results.md (default: the file name)
description: plain vs residual nets at two depths    # optional, shown on top of results.md
recipe: fmnist-fast          # a recipe name (`resnetlab train --list-recipes`) or a YAML path
set:                         # optional: dotted config keys fixed for every run
  train.epochs: 3
grid:                        # dotted config keys -> the values to try; every combination is a point
  model.name: [plain20, resnet20, plain56, resnet56]
seeds: [0, 1, 2]             # optional (default [0]): every point runs once per seed (train.seed)
when:                        # optional: more overrides for the runs whose grid key has one value
  model.name=resnet56: {schedule.warmup_iters: 400}
  model.name=resnet110: {recipe: he2016-cifar10-deep}   # `recipe:` there: those runs start from another recipe
```

Overrides apply in this order: the recipe, `set`, the matching `when` entries, the grid values, the seed.

Each (point, seed) is one ordinary run directory `DIR/runs/<name>/`, named from its grid values and seed
(`plain20_seed0`, `epochs10_batch_size64_seed1`). A relative `recipe:` path is relative to the spec file.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from resnetlab.errors import UserError

SPEC_KEYS = ("name", "description", "recipe", "set", "grid", "seeds", "when")
# Keys the sweep itself decides for every run; a spec may not set or vary them.
RESERVED_KEYS = ("train.seed", "train.out_dir")
SEED_KEY = "train.seed"
RECIPE_KEY = "recipe"  # in a `when:` entry: the runs of that grid value start from another recipe


@dataclass(frozen=True)
class SweepSpec:
    """A parsed, validated sweep spec (see the module docstring for the YAML form)."""

    recipe: str
    grid: dict[str, list[Any]]
    seeds: list[int]
    fixed: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    name: str = "sweep"
    when: dict[str, dict[str, Any]] = field(default_factory=dict)  # "key=value" -> overrides

    def to_dict(self) -> dict[str, Any]:
        """The spec as the plain mapping it was read from (written to DIR/sweep.yaml)."""
        return {"name": self.name, "description": self.description, "recipe": self.recipe, "set": dict(self.fixed),
                "grid": {key: list(values) for key, values in self.grid.items()}, "seeds": list(self.seeds),
                "when": {cond: dict(pairs) for cond, pairs in self.when.items()}}

    def conditional(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The `when` overrides that apply to a point with these grid values."""
        out: dict[str, Any] = {}
        for condition, pairs in self.when.items():
            key, value = _condition(condition)
            if key in values and values[key] == value:
                out.update(pairs)
        return out


@dataclass(frozen=True)
class RunPoint:
    """One run of a sweep: the grid values of its point, its seed and its directory name."""

    name: str
    values: dict[str, Any]
    seed: int

    def overrides(self, spec: SweepSpec) -> list[str]:
        """`dotted.key=value` overrides for `load_config` / `resnetlab train --set` (values as YAML)."""
        conditional = {k: v for k, v in spec.conditional(self.values).items() if k != RECIPE_KEY}
        pairs = {**spec.fixed, **conditional, **self.values, SEED_KEY: self.seed}
        return [f"{key}={format_value(value)}" for key, value in pairs.items()]

    def recipe(self, spec: SweepSpec) -> str:
        """The recipe of this run: the spec's, or the one a `when:` entry names for its grid value."""
        return str(spec.conditional(self.values).get(RECIPE_KEY, spec.recipe))


def shipped_specs() -> list[str]:
    """Names of the specs shipped in `resnetlab/sweeps/`."""
    folder = resources.files("resnetlab") / "sweeps"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_spec(spec: str | Path | Mapping[str, Any]) -> SweepSpec:
    """Read a spec from a shipped name, a YAML file path, or a mapping of the same keys, and validate its shape.

    The keys themselves are checked against the config by `check_spec` (it needs the engine). A mapping is the
    YAML form as Python (e.g. `load_spec("degradation-fmnist").to_dict()` with a smaller budget): its relative
    recipe paths are relative to the working directory.

    Raises:
        UserError: the file is missing or malformed, or a field has the wrong shape.
    """
    if isinstance(spec, Mapping):
        return parse_spec(spec, name=str(spec.get("name") or "sweep"))
    text, name, base = _read_spec_text(spec)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"sweep spec {spec} is not valid YAML ({_first_line(exc)}); fix the file") from None
    if not isinstance(raw, Mapping):
        raise UserError(f"sweep spec {spec} must be a mapping with keys {', '.join(SPEC_KEYS)}")
    return parse_spec(raw, name=name, base=base)


def with_overrides(spec: str | Path | Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """The spec as a mapping with `key=value` overrides added to its `set:` (`resnetlab sweep SPEC --set ...`: every
    run gets them, as `train --set` gives them to one run). A key the grid varies is an error; a `when:` entry
    still wins over it for its grid value."""
    parsed = load_spec(spec)
    raw = parsed.to_dict()
    for item in overrides:
        key, text = item.partition("=")[0].strip(), item.partition("=")[2]
        if not key or "=" not in item:
            raise UserError(f"--set expects KEY=VALUE (e.g. train.epochs=2); got {item!r}")
        if key in parsed.grid:
            raise UserError(f"--set {key}: sweep {parsed.name} varies it in its grid ({format_value(parsed.grid[key])})"
                            "; leave it to the grid or copy the spec and change it there")
        try:
            raw["set"][key] = yaml.safe_load(text)
        except yaml.YAMLError:
            raw["set"][key] = text
    parse_spec(raw, name=parsed.name)  # reserved keys (train.seed, train.out_dir) are refused as in a spec
    return raw


def parse_spec(raw: Mapping[str, Any], *, name: str = "sweep", base: Path | None = None) -> SweepSpec:
    """Validate a spec mapping (as read from YAML); `base` resolves a relative recipe path."""
    unknown = sorted(set(raw) - set(SPEC_KEYS))
    if unknown:
        raise UserError(f"unknown key {unknown[0]!r} in sweep spec {name}; allowed: {', '.join(SPEC_KEYS)}")
    recipe = raw.get("recipe")
    if not isinstance(recipe, str) or not recipe:
        raise UserError(f"sweep spec {name} needs 'recipe: NAME' (see 'resnetlab train --list-recipes')")
    if recipe.endswith((".yaml", ".yml")) and base is not None and not Path(recipe).is_absolute():
        recipe = str((base / recipe).resolve())
    fixed = _mapping(raw.get("set") or {}, "set", name)
    grid = _grid(raw.get("grid"), name)
    seeds = _seeds(raw.get("seeds", [0]), name)
    when = _when(raw.get("when") or {}, grid, name)
    for key in (*fixed, *grid, *(k for pairs in when.values() for k in pairs)):
        if key in RESERVED_KEYS:
            raise UserError(f"sweep spec {name} may not set {key!r}: the sweep sets it (use 'seeds:' for seeds)")
    both = sorted(set(fixed) & set(grid))
    if both:
        raise UserError(f"sweep spec {name} has {both[0]!r} both in 'set' and in 'grid'; keep one")
    return SweepSpec(recipe=recipe, grid=grid, seeds=seeds, fixed=fixed,
                     description=str(raw.get("description") or ""), name=str(raw.get("name") or name),
                     when=when)


def expand(spec: SweepSpec) -> list[RunPoint]:
    """Every grid point x seed, in grid order (the first key varies slowest), seeds innermost."""
    keys = list(spec.grid)
    labels = grid_labels(keys)
    runs = []
    for combo in itertools.product(*(spec.grid[key] for key in keys)):
        values = dict(zip(keys, combo, strict=True))
        stem = "_".join(_slug(labels[key], value) for key, value in values.items())
        runs += [RunPoint(name=f"{stem}_seed{seed}", values=values, seed=seed) for seed in spec.seeds]
    names = [run.name for run in runs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise UserError(f"two runs of sweep {spec.name} would share the directory name {duplicate!r}; "
                        "make the grid values distinct")
    return runs


def format_value(value: Any) -> str:
    """A value as YAML flow text, the form `--set key=value` parses back to the same value."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def point_label(values: Mapping[str, Any]) -> str:
    """A short human label for a grid point: `plain20`, `epochs=10, batch_size=64`."""
    labels = grid_labels(list(values))
    return ", ".join(str(v) if labels[k] == "" else f"{labels[k]}={format_value(v)}" for k, v in values.items())


# ------------------------------------------------------------------------------------------------ helpers


def _read_spec_text(spec: str | Path) -> tuple[str, str, Path | None]:
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"sweep spec file {path} not found; give a YAML file or one of: "
                            f"{', '.join(shipped_specs())}")
        return path.read_text(), path.stem, path.parent.resolve()
    shipped = resources.files("resnetlab") / "sweeps" / f"{spec}.yaml"
    if not shipped.is_file():
        raise UserError(f"unknown sweep {str(spec)!r}; give a YAML file or one of: {', '.join(shipped_specs())}")
    return shipped.read_text(), str(spec), None


def _mapping(value: Any, field_name: str, name: str) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and k for k in value):
        raise UserError(f"'{field_name}:' in sweep spec {name} must map dotted config keys to values")
    return dict(value)


def _grid(value: Any, name: str) -> dict[str, list[Any]]:
    grid = _mapping(value if value is not None else {}, "grid", name)
    if not grid:
        raise UserError(f"sweep spec {name} has an empty grid; add e.g. 'grid: {{model.name: [plain20, resnet20]}}'")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"grid key {key!r} in sweep spec {name} needs a non-empty list of values, e.g. [1, 2]")
        if any(values.count(v) > 1 for v in values):
            raise UserError(f"grid key {key!r} in sweep spec {name} lists a value twice; list each once")
    return grid


def _when(value: Any, grid: dict[str, list[Any]], name: str) -> dict[str, dict[str, Any]]:
    when = _mapping(value, "when", name)
    for condition, pairs in when.items():
        key, target = _condition(condition)
        if key not in grid or target not in grid[key]:
            raise UserError(f"'when: {condition}' in sweep spec {name} must name a grid key and one of its values, "
                            f"e.g. model.name={format_value(next(iter(grid.values()))[0])}")
        when[condition] = _mapping(pairs or {}, f"when: {condition}", name)
        clash = sorted(set(when[condition]) & set(grid))
        if clash:
            raise UserError(f"'when: {condition}' in sweep spec {name} sets grid key {clash[0]!r}; the grid decides it")
    return when


def _condition(condition: str) -> tuple[str, Any]:
    key, _, text = condition.partition("=")
    try:
        return key.strip(), yaml.safe_load(text)
    except yaml.YAMLError:
        return key.strip(), text


def _seeds(value: Any, name: str) -> list[int]:
    ok = isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value)
    if not ok or len(set(value)) != len(value):
        raise UserError(f"'seeds:' in sweep spec {name} must be a non-empty list of distinct integers, e.g. [0, 1, 2]")
    return list(value)


def grid_labels(keys: list[str]) -> dict[str, str]:
    """Per grid key, the short label used in run names: the last dotted part, or the whole key when two grid
    keys share it; `model.name` gets none (a run called `resnet20_seed0` reads best)."""
    leaves = [key.rsplit(".", 1)[-1] for key in keys]
    labels = {}
    for key, leaf in zip(keys, leaves, strict=True):
        labels[key] = "" if key == "model.name" else (leaf if leaves.count(leaf) == 1 else key)
    return labels


def _slug(label: str, value: Any) -> str:
    text = format_value(value).strip("[]{}")
    text = re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "x"
    return f"{label.replace('.', '-')}{text}" if label else text


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
