"""Runs side by side: one Markdown table of what their summaries say (time, speed, accuracy).

For a handful of runs trained one after another (a notebook comparing two recipes, say); a sweep's grid of runs
with seeds has its own tables (`sweep_tables.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from resnetlab.engine.config import Config
from resnetlab.engine.rundir import read_config, read_summary
from resnetlab.errors import UserError
from resnetlab.reports.sweep_tables import markdown_table

COLUMNS = ("run", "recipe", "model", "input (px)", "batch", "iterations", "train time (s)", "s / iteration",
           "images/s", "best val acc", "test acc")


def _percent(value: float | None) -> str:
    return f"{100 * value:.2f}%" if value is not None else "–"


def input_size(cfg: Config) -> str:
    """The side of the images the network sees: data.resize, else data.image_size, else as stored ("native")."""
    size = cfg.data.resize or cfg.data.image_size
    return str(size) if size else "native"


def run_row(run_dir: Path | str, label: str | None = None) -> dict[str, str]:
    """One finished run as the table's cells (see COLUMNS)."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    if summary is None:
        raise UserError(f"{run_dir} has not finished (no summary.json); train it to the end first")
    cfg = read_config(run_dir)
    steps = int(summary["steps"])
    return {
        "run": label or run_dir.name, "recipe": str(summary.get("recipe", cfg.recipe)), "model": cfg.model.name,
        "input (px)": input_size(cfg), "batch": str(cfg.data.batch_size), "iterations": f"{steps:,}",
        "train time (s)": f"{summary['train_time_s']:.1f}", "s / iteration": f"{summary['train_time_s'] / steps:.3f}",
        "images/s": f"{summary['images_per_s']:.0f}", "best val acc": _percent(summary.get("best_val_acc")),
        "test acc": _percent(summary.get("test_acc")),
    }


def runs_table(run_dirs: Sequence[Path | str], labels: Sequence[str] | None = None) -> str:
    """A Markdown table of finished runs: recipe, model, input size, batch, iterations, training time, speed,
    best validation and test accuracy (of the best-validation model).

    Args:
        run_dirs: run directories with summary.json.
        labels: the first column (default: the directory names).

    Raises:
        UserError: no runs, a label count that does not match, or a run that has not finished.
    """
    if not run_dirs:
        raise UserError("give at least one run directory")
    if labels is not None and len(labels) != len(run_dirs):
        raise UserError(f"{len(labels)} labels for {len(run_dirs)} runs; give one per run")
    rows = [run_row(d, labels[i] if labels else None) for i, d in enumerate(run_dirs)]
    lines = markdown_table(COLUMNS, ([row[c] for c in COLUMNS] for row in rows))
    return "\n".join(lines)
