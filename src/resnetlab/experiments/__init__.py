"""Experiments: sweeps (grid x seeds of ordinary runs; the sweep directory's format) and the learning-rate range
test. The layer below `reports/`, which it never imports.

- `train_sweep(spec, out_dir, jobs=1) -> SweepOutcome` (sweep.py), `load_spec` (spec.py), `read_sweep_spec`
  (sweepdir.py)
- `lr_find(cfg, out, ...) -> LRFindResult` (lr_find.py)

A whole sweep with its tables and figures is `resnetlab.reports.sweep_run.run_sweep` (train_sweep, then
`resnetlab.reports.sweep_tables.aggregate`).
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "train_sweep": "resnetlab.experiments.sweep",
    "load_spec": "resnetlab.experiments.spec",
    "read_sweep_spec": "resnetlab.experiments.sweepdir",
    "lr_find": "resnetlab.experiments.lr_find",
    "LRFindResult": "resnetlab.experiments.lr_find",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy, like the package root: matplotlib and torch load only when a function is used.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'resnetlab.experiments' has no attribute {name!r}")
