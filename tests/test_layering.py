"""The package's layers, read from its source with `ast`: no import goes up, none sits hidden in a function, no cycle.

Layers, bottom to top (docs/internals.md): errors and version; models and data (leaves, independent of each
other); engine; inference (using a finished run); reports and experiments; cli and the package root (the public
API). A module imports only from its own layer or below. Imports of the package's own modules sit at the tops of
modules; only cli.py defers them (to keep `resnetlab --help` fast), and the package `__init__` files export lazily
through importlib.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "resnetlab"
LAYERS = {"errors": 0, "version": 0, "models": 1, "data": 1, "engine": 2, "inference": 3, "reports": 4,
          "experiments": 4, "cli": 5, "__main__": 5, "": 5}
INDEPENDENT = {("models", "data"), ("data", "models")}  # the two leaves never import each other
DEFERRING = {"resnetlab.cli"}  # may import the package's modules inside functions


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported resnetlab module, at the top level?, line) for every import of the package in a file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    top |= {id(n) for node in tree.body if isinstance(node, ast.If) for n in ast.walk(node)}  # TYPE_CHECKING blocks
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("resnetlab"):
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found += [(_resolve(name), id(node) in top, node.lineno) for name in names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top, node.lineno) for alias in node.names
                      if alias.name.startswith("resnetlab")]
    return found


def _resolve(name: str) -> str:
    """`resnetlab.engine.config.Config` -> the module `resnetlab.engine.config` (a name is not a module)."""
    parts = name.split(".")
    while len(parts) > 1:
        candidate = SRC.parent.joinpath(*parts)
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return "resnetlab"


def layer_of(module: str) -> tuple[str, int]:
    part = module.split(".")[1] if "." in module else ""  # the package root: the public API, on top
    return part, LAYERS[part]


MODULES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_import_goes_up_a_layer_or_hides_in_a_function(path: Path) -> None:
    name = module_name(path)
    part, layer = layer_of(name)
    for target, at_top, line in imports(path):
        if target in ("resnetlab", name):
            continue
        target_part, target_layer = layer_of(target)
        assert target_layer <= layer, f"{name}:{line} imports {target} from a higher layer"
        assert (part, target_part) not in INDEPENDENT, f"{name}:{line} imports {target}: {part} and data/models " \
                                                       "are independent leaves"
        assert at_top or name in DEFERRING, f"{name}:{line} imports {target} inside a function; import at the top"


def test_modules_import_each_other_without_cycles() -> None:
    graph = {module_name(p): {t for t, at_top, _ in imports(p) if at_top and t != module_name(p)} for p in MODULES}
    graph = {m: {t for t in deps if t in graph and not t == "resnetlab"} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep] if dep in path else [module, dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_rules_catch_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an engine module importing reports is caught (a guard against a test that cannot fail)."""
    name, layer = layer_of("resnetlab.engine.trainer")
    target, target_layer = layer_of(_resolve("resnetlab.reports.plots.plot_runs"))
    assert (name, target) == ("engine", "reports") and target_layer > layer
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from resnetlab.reports import plots\n")
    assert imports(bad) == [("resnetlab.reports.plots", False, 2)]
