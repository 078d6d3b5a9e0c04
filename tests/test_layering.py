"""The package's layers, read from its source with `ast`: no import goes up, none sits hidden in a function, no cycle
between modules or between packages.

Layers, bottom to top (docs/internals.md): errors and version; models and data (leaves, independent of each
other); engine (training a run); inference (using a finished run); experiments (sweeps, lr-find); reports (read
run and sweep directories); cli and the package root (the public API). A module imports only from its own layer or
below. Imports of the package's own modules sit at the tops of modules; only cli.py defers them (to keep
`resnetlab --help` fast), and the package `__init__` files export lazily through importlib: the modules named in
their `_EXPORTS` count as imports too (a lazy export is a dependency all the same).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "resnetlab"
LAYERS = {"errors": 0, "version": 0, "models": 1, "data": 1, "engine": 2, "inference": 3, "experiments": 4,
          "reports": 5, "cli": 6, "__main__": 6, "": 6}
INDEPENDENT = {("models", "data"), ("data", "models")}  # the two leaves never import each other
DEFERRING = {"resnetlab.cli"}  # may import the package's modules inside functions


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported resnetlab module, at the top level?, line) for every import of the package in a file, and every
    module a package `__init__` exports lazily (`_EXPORTS = {name: "resnetlab.module"}`)."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    top |= {id(n) for node in tree.body if isinstance(node, ast.If) for n in ast.walk(node)}  # TYPE_CHECKING blocks
    found = lazy_exports(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("resnetlab"):
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found += [(_resolve(name), id(node) in top, node.lineno) for name in names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top, node.lineno) for alias in node.names
                      if alias.name.startswith("resnetlab")]
    return found


def lazy_exports(tree: ast.Module) -> list[tuple[str, bool, int]]:
    """The modules of a top-level `_EXPORTS` dict (the package `__init__` files' lazy exports), as top imports."""
    found = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets) \
                and isinstance(node.value, ast.Dict):
            found += [(_resolve(value.value), True, value.lineno) for value in node.value.values
                      if isinstance(value, ast.Constant) and str(value.value).startswith("resnetlab")]
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
        if target == name:
            continue
        target_part, target_layer = layer_of(target)
        assert target_layer <= layer, f"{name}:{line} imports {target} from a higher layer"
        assert (part, target_part) not in INDEPENDENT, f"{name}:{line} imports {target}: {part} and data/models " \
                                                       "are independent leaves"
        assert at_top or name in DEFERRING, f"{name}:{line} imports {target} inside a function; import at the top"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of `graph` (node -> the nodes it imports) as `[a, b, ..., a]`, or None when it has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep, [*path, dep])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [node])):
            return cycle
    return None


def module_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports at its top (lazy exports included), the root left out."""
    graph = {module_name(p): {t for t, at_top, _ in imports(p) if at_top and t != module_name(p)} for p in MODULES}
    return {m: {t for t in deps if t in graph and t != "resnetlab"} for m, deps in graph.items()}


def package_of(module: str) -> str:
    """`resnetlab.engine.trainer` -> `resnetlab.engine`; a top-level module (`resnetlab.cli`) is its own node."""
    return ".".join(module.split(".")[:2])


def package_graph(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph folded onto packages: package -> the other packages its modules import."""
    graph: dict[str, set[str]] = {}
    for module, deps in modules.items():
        graph.setdefault(package_of(module), set()).update(package_of(d) for d in deps)
    return {package: deps - {package} for package, deps in graph.items()}


def test_modules_import_each_other_without_cycles() -> None:
    cycle = find_cycle(module_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_packages_import_each_other_without_cycles() -> None:
    """One direction between packages too: engine never reaches reports, nor experiments reports, through any chain
    of modules (the module graph can be acyclic while two packages import each other)."""
    packages = package_graph(module_graph())
    assert {"resnetlab.engine", "resnetlab.experiments", "resnetlab.reports"} <= set(packages)
    cycle = find_cycle(packages)
    assert cycle is None, "package cycle: " + " -> ".join(cycle or [])


def test_the_cycle_checks_find_a_cycle() -> None:
    """The checkers themselves, on small made-up graphs: a cycle is reported with its path, an acyclic graph passes,
    and two packages whose modules import each other without a module cycle are a package cycle."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    modules = {"resnetlab.experiments.sweep": {"resnetlab.reports.tables"},
               "resnetlab.reports.tables": {"resnetlab.experiments.spec"}, "resnetlab.experiments.spec": set()}
    assert find_cycle(modules) is None
    assert package_graph(modules) == {"resnetlab.experiments": {"resnetlab.reports"},
                                      "resnetlab.reports": {"resnetlab.experiments"}}
    assert find_cycle(package_graph(modules)) == ["resnetlab.experiments", "resnetlab.reports",
                                                  "resnetlab.experiments"]


def test_the_rules_catch_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an engine module importing reports, or experiments importing reports (also through a lazy
    export), is caught (a guard against a test that cannot fail)."""
    name, layer = layer_of("resnetlab.engine.trainer")
    target, target_layer = layer_of(_resolve("resnetlab.reports.plots.plot_runs"))
    assert (name, target) == ("engine", "reports") and target_layer > layer
    assert layer_of("resnetlab.experiments.sweep")[1] < layer_of("resnetlab.reports.sweep_tables")[1]
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from resnetlab.reports import plots\n")
    assert imports(bad) == [("resnetlab.reports.plots", False, 2)]
    lazy = tmp_path / "__init__.py"
    lazy.write_text('_EXPORTS = {\n    "aggregate": "resnetlab.reports.sweep_tables",\n}\n')
    assert imports(lazy) == [("resnetlab.reports.sweep_tables", True, 2)]
