"""Experiments: sweeps (grid x seeds of ordinary runs, ending in mean ± std tables and the paper's figures) and
the learning-rate range test.

- `run_sweep(spec, out_dir, jobs=1) -> Path` and `aggregate(out_dir) -> Path` (sweep.py, aggregate.py)
- `lr_find(cfg, out, ...) -> LRFindResult` and `lr_find_model(model, optimizer, loader, ...)` (lr_find.py)
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "run_sweep": "resnetlab.experiments.sweep",
    "aggregate": "resnetlab.reports.sweep_tables",
    "load_spec": "resnetlab.experiments.spec",
    "lr_find": "resnetlab.experiments.lr_find",
    "lr_find_model": "resnetlab.experiments.lr_find",
    "LRFindResult": "resnetlab.experiments.lr_find",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy, like the package root: matplotlib and torch load only when a function is used.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'resnetlab.experiments' has no attribute {name!r}")
