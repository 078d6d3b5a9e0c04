"""Aggregate a sweep directory: results.csv (one row per run), results.md (mean ± std per grid point), figures.

Only finished runs (those with summary.json) count; the grid values of a run come from DIR/sweep.yaml, the spec
the sweep was started with, so aggregation needs nothing but the directory. Errors are 100 * (1 - accuracy).
The table's headline number is the test error of the FINAL model (`test_acc_final`), the convention of the
paper's Table 6; the test error of the best-validation model is in results.csv (`test_acc`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from resnetlab.errors import UserError
from resnetlab.experiments.spec import RunPoint, SweepSpec, expand, format_value, grid_labels, parse_spec

logger = logging.getLogger(__name__)

SPEC_FILE = "sweep.yaml"
RUNS_DIR = "runs"


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


def read_sweep_spec(out_dir: str | Path) -> SweepSpec:
    """The spec a sweep directory was started with (DIR/sweep.yaml)."""
    path = Path(out_dir) / SPEC_FILE
    if not path.is_file():
        raise UserError(f"{out_dir} is not a sweep directory (no {SPEC_FILE}); give the --out DIR of a sweep")
    return parse_spec(yaml.safe_load(path.read_text()), name=Path(out_dir).name)


def collect_runs(out_dir: str | Path, spec: SweepSpec) -> list[RunRecord]:
    """The finished runs of the sweep in grid order (runs without summary.json are left out)."""
    records = []
    for point in expand(spec):
        run_dir = Path(out_dir) / RUNS_DIR / point.name
        summary_path = run_dir / "summary.json"
        if summary_path.is_file():
            records.append(RunRecord(point, json.loads(summary_path.read_text()), read_metrics(run_dir)))
    return records


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of RUN_DIR/metrics.jsonl (empty when the file is missing); a torn last line is skipped."""
    path = run_dir / "metrics.jsonl"
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def group_points(spec: SweepSpec, records: Sequence[RunRecord]) -> list[PointStats]:
    """Finished runs grouped by grid point, in grid order; points with no finished run are left out."""
    groups: dict[tuple[str, ...], list[RunRecord]] = {}
    for record in records:
        groups.setdefault(_point_key(record.point.values), []).append(record)
    return [PointStats(dict(runs[0].point.values), runs) for runs in groups.values()]


def aggregate(out_dir: str | Path) -> Path:
    """Rebuild DIR/results.csv, DIR/results.md and the figures from the finished runs of a sweep.

    Args:
        out_dir: the sweep directory (the `--out DIR` of `resnetlab sweep`).

    Returns:
        The path of DIR/results.md.

    Raises:
        UserError: `out_dir` is not a sweep directory.
    """
    from resnetlab.experiments.figures import draw_figures

    out = Path(out_dir)
    spec = read_sweep_spec(out)
    records = collect_runs(out, spec)
    points = group_points(spec, records)
    write_csv(out / "results.csv", spec, records)
    table = out / "results.md"
    figures = draw_figures(out, spec, points) if points else []
    table.write_text(render_markdown(spec, points, total=len(expand(spec)), figures=figures))
    logger.info("%d of %d runs finished; wrote %s", len(records), len(expand(spec)), table)
    return table


# -------------------------------------------------------------------------------------------------- files


def write_csv(path: Path, spec: SweepSpec, records: Sequence[RunRecord]) -> None:
    """One row per finished run: run name, grid values, seed, then every scalar summary.json field."""
    fields: list[str] = []
    for record in records:
        fields += [k for k, v in record.summary.items() if _is_scalar(v) and k not in fields]
    header = ["run", *spec.grid, "seed", *fields]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for record in records:
            grid = [format_value(record.point.values[k]) for k in spec.grid]
            writer.writerow([record.point.name, *grid, record.point.seed, *(record.summary.get(k, "") for k in fields)])


def render_markdown(spec: SweepSpec, points: Sequence[PointStats], *, total: int, figures: Sequence[Path]) -> str:
    """results.md: a header saying what was run, then one table row per grid point."""
    finished = sum(len(p.runs) for p in points)
    lines = [f"# Sweep {spec.name}", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    fixed = ", ".join(f"{k}={format_value(v)}" for k, v in spec.fixed.items())
    lines += [f"Recipe `{Path(spec.recipe).name}`" + (f" with `{fixed}`" if fixed else "") +
              f"; seeds {format_value(spec.seeds)}; {finished} of {total} runs finished.", "",
              "Errors in %: mean ± sample standard deviation over the finished seeds. *Test error* is that of the "
              "final model, the convention of the paper's Table 6 (the best-validation model's test accuracy is "
              "`test_acc` in results.csv); validation error is the best seen during training.", ""]
    header = [*_grid_headers(spec), "seeds", "test error (final)", "best val error", "final train error",
              "params", "wall time / run"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for p in points:
        cells = [format_value(p.values[k]) for k in spec.grid]
        cells += [str(len(p.runs)), mean_std(p.errors("test_acc_final")), mean_std(p.errors("best_val_acc")),
                  mean_std(p.errors("final_train_acc")), _params(p.values_of("params")),
                  _duration(p.values_of("wall_time_s"))]
        lines.append("| " + " | ".join(cells) + " |")
    wall = sum(sum(p.values_of("wall_time_s")) for p in points)
    lines += ["", f"Wall time of the finished runs, summed: {_duration([wall])}."]
    if figures:
        lines += ["", *(f"![{f.stem}]({f.name})" for f in figures)]
    return "\n".join(lines) + "\n"


def mean_std(values: Sequence[float], digits: int = 2) -> str:
    """`7.51 ± 0.16` (sample std, n - 1); a single value has no ±, none is `—`."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _grid_headers(spec: SweepSpec) -> list[str]:
    return [label or "model" for label in grid_labels(list(spec.grid)).values()]


def _params(values: Sequence[float]) -> str:
    return f"{values[0] / 1e6:.2f}M" if values else "—"


def _duration(values: Sequence[float]) -> str:
    if not values:
        return "—"
    seconds = statistics.fmean(values)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _point_key(values: dict[str, Any]) -> tuple[str, ...]:
    return tuple(format_value(v) for v in values.values())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (int, float, str, bool))
