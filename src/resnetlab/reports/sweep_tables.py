"""Sweep tables: results.csv (one row per run) and results.md (mean ± std per grid point), then the figures.

The table's headline number is the test error of the FINAL model (`test_acc_final`), the convention of the
paper's Table 6; the test error of the best-validation model is in results.csv (`test_acc`).
"""

from __future__ import annotations

import csv
import io
import logging
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from resnetlab.engine.rundir import RERUN, atomic_write
from resnetlab.experiments.spec import SweepSpec, expand, format_value, grid_labels
from resnetlab.experiments.sweepdir import RESULTS_CSV, RESULTS_MD, read_sweep_spec
from resnetlab.reports.sweep_data import PointStats, RunRecord, collect_runs, group_points, mean_std
from resnetlab.reports.sweep_figures import draw_figures

logger = logging.getLogger(__name__)


def aggregate(out_dir: str | Path) -> Path:
    """Rebuild DIR/results.csv, DIR/results.md and the figures from the finished runs of a sweep.

    Args:
        out_dir: the sweep directory (the `--out DIR` of `resnetlab sweep`).

    Returns:
        The path of DIR/results.md.

    Raises:
        UserError: `out_dir` is not a sweep directory.
    """
    out = Path(out_dir)
    spec = read_sweep_spec(out)
    records = collect_runs(out, spec)
    points = group_points(spec, records)
    write_csv(out / RESULTS_CSV, spec, records)
    table = out / RESULTS_MD
    figures = draw_figures(out, spec, points) if points else []
    atomic_write(table, render_markdown(spec, points, total=len(expand(spec)), figures=figures), rerun=RERUN)
    logger.info("%d of %d runs finished; wrote %s", len(records), len(expand(spec)), table)
    return table


# -------------------------------------------------------------------------------------------------- files


def write_csv(path: Path, spec: SweepSpec, records: Sequence[RunRecord]) -> None:
    """One row per finished run: run name, grid values, seed, then every scalar summary.json field (written
    atomically)."""
    fields: list[str] = []
    for record in records:
        fields += [k for k, v in record.summary.items() if _is_scalar(v) and k not in fields]
    header = ["run", *spec.grid, "seed", *fields]
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    for record in records:
        grid = [format_value(record.point.values[k]) for k in spec.grid]
        writer.writerow([record.point.name, *grid, record.point.seed, *(record.summary.get(k, "") for k in fields)])
    atomic_write(path, text.getvalue(), rerun=RERUN)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table (results.md, `compare.runs_table`)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(cells) + " |" for cells in rows)]


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
    rows = [[*(format_value(p.values[k]) for k in spec.grid), str(len(p.runs)), mean_std(p.errors("test_acc_final")),
             mean_std(p.errors("best_val_acc")), mean_std(p.errors("final_train_acc")),
             _params(p.values_of("params")), _duration(p.values_of("wall_time_s"))] for p in points]
    lines += markdown_table(header, rows)
    wall = sum(sum(p.values_of("wall_time_s")) for p in points)
    lines += ["", f"Wall time of the finished runs, summed: {_duration([wall])}."]
    if figures:
        lines += ["", *(f"![{f.stem}]({f.name})" for f in figures)]
    return "\n".join(lines) + "\n"


def _grid_headers(spec: SweepSpec) -> list[str]:
    return [label or "model" for label in grid_labels(list(spec.grid)).values()]


def _params(values: Sequence[float]) -> str:
    return f"{values[0] / 1e6:.2f}M" if values else "—"


def _duration(values: Sequence[float]) -> str:
    if not values:
        return "—"
    seconds = statistics.fmean(values)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (int, float, str, bool))
