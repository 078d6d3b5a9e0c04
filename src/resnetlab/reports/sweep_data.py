"""The finished runs of a sweep directory, grouped by grid point: what the sweep tables and figures are made of.

Only finished runs (those with summary.json) count; the grid values of a run come from DIR/sweep.yaml, the spec
the sweep was started with, so reading a sweep needs nothing but the directory (its format is
`experiments/sweepdir.py`'s). Errors are 100 * (1 - accuracy).
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnetlab.engine.rundir import read_metrics, read_summary
from resnetlab.experiments.spec import RunPoint, SweepSpec, expand, format_value
from resnetlab.experiments.sweepdir import point_dir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunRecord:
    """A finished run: its place in the grid, its summary.json and its metrics.jsonl rows."""

    point: RunPoint
    summary: dict[str, Any]
    curve: list[dict[str, Any]]


@dataclass(frozen=True)
class PointStats:
    """One grid point aggregated over its finished seeds (errors in %)."""

    values: dict[str, Any]
    runs: list[RunRecord]

    def errors(self, key: str) -> list[float]:
        """100 * (1 - summary[key]) of every run that has it."""
        return [100.0 * (1.0 - r.summary[key]) for r in self.runs if _is_number(r.summary.get(key))]

    def values_of(self, key: str) -> list[float]:
        return [float(r.summary[key]) for r in self.runs if _is_number(r.summary.get(key))]


def collect_runs(out_dir: str | Path, spec: SweepSpec) -> list[RunRecord]:
    """The finished runs of the sweep in grid order: runs without a valid summary.json are left out (a corrupt one
    with a warning that names it)."""
    records = []
    for point in expand(spec):
        run_dir = point_dir(out_dir, point)
        summary = read_summary(run_dir, strict=False)
        if summary is not None:
            records.append(RunRecord(point, summary, read_metrics(run_dir, required=False)))
    return records


def group_points(spec: SweepSpec, records: Sequence[RunRecord]) -> list[PointStats]:
    """Finished runs grouped by grid point, in grid order; points with no finished run are left out."""
    groups: dict[tuple[str, ...], list[RunRecord]] = {}
    for record in records:
        groups.setdefault(_point_key(record.point.values), []).append(record)
    return [PointStats(dict(runs[0].point.values), runs) for runs in groups.values()]


def mean_std(values: Sequence[float], digits: int = 2) -> str:
    """`7.51 ± 0.16` (sample std, n - 1); a single value has no ±, none is `—`."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _point_key(values: dict[str, Any]) -> tuple[str, ...]:
    return tuple(format_value(v) for v in values.values())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
