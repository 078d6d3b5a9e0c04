"""Gradient flow figures: the gradient norm of every stage (or block) against iteration, several runs side by side.

The rows come from metrics.jsonl (`grad_norm`, logged with `train.grad_norms=stage|block`, engine/gradflow.py).
One panel per run on one shared logarithmic axis, one line per group coloured from the first layers (dark) to
the classifier (light): a deep plain net beside its residual twin shows what the shortcuts carry back to the
first layers. `resnetlab plot` draws it next to the curves when the runs logged it; a sweep draws gradflow.png.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure

from resnetlab.engine.figurefile import save_figure
from resnetlab.engine.gradflow import GRAD_NORM_KEY
from resnetlab.engine.rundir import read_metrics
from resnetlab.errors import UserError
from resnetlab.reports.plots import plot_runs

log = logging.getLogger(__name__)

DPI = 110
PANEL_WIDTH = 3.6  # inches per run


def grad_series(rows: Sequence[dict[str, Any]]) -> tuple[list[int], dict[str, list[float | None]]]:
    """(steps, {group: norms}) of the rows that hold gradient norms, groups in the network's order."""
    logged = [r for r in rows if isinstance(r.get(GRAD_NORM_KEY), dict)]
    groups: dict[str, list[float | None]] = {}
    for r in logged:
        for name in r[GRAD_NORM_KEY]:
            groups.setdefault(name, [])
    for r in logged:
        for name, values in groups.items():
            values.append(r[GRAD_NORM_KEY].get(name))
    return [int(r["step"]) for r in logged], groups


def has_grad_norms(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether any row holds gradient norms."""
    return any(isinstance(r.get(GRAD_NORM_KEY), dict) for r in rows)


def draw_grad_flow(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: Path | str,
                   title: str | None = None) -> Path:
    """One panel per (label, metrics rows) run, side by side on a shared log axis; returns the PNG written.

    Raises:
        UserError: no run logged gradient norms (train.grad_norms=none).
    """
    runs = [(label, rows) for label, rows in runs if has_grad_norms(rows)]
    if not runs:
        raise UserError("no run here logged gradient norms; train with --set train.grad_norms=stage (or block)")
    fig = Figure(figsize=(PANEL_WIDTH * len(runs) + 1.2, 4.0))
    axes = fig.subplots(1, len(runs), sharey=True, squeeze=False)[0]
    for ax, (label, rows) in zip(axes, runs, strict=True):
        steps, groups = grad_series(rows)
        cmap = colormaps["viridis"]
        for i, (name, values) in enumerate(groups.items()):
            pairs = [(s, v) for s, v in zip(steps, values, strict=True) if v is not None and v > 0]
            ax.plot([s for s, _ in pairs], [v for _, v in pairs], color=cmap(i / max(1, len(groups) - 1)),
                    linewidth=1.3 if len(groups) < 8 else 0.9, label=name if len(groups) <= 12 else None)
        ax.set_yscale("log")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("iteration")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("gradient norm (L2, per group)")
    handles, labels = axes[-1].get_legend_handles_labels()
    if handles:
        axes[-1].legend(handles, labels, fontsize=7, loc="best")
    fig.suptitle(title or "Gradient norm of each stage against iteration (dark: first layers, light: classifier)",
                 fontsize=10)
    fig.tight_layout()
    path = save_figure(fig, Path(path), dpi=DPI, tight=True)
    log.info("wrote %s", path)
    return path


def plot_grad_flow(run_dirs: Sequence[Path | str], out: Path | str) -> Path:
    """The gradient flow of runs (their metrics.jsonl) side by side: `resnetlab plot` draws it as OUT_gradflow.png."""
    return draw_grad_flow([(Path(d).name, read_metrics(d)) for d in run_dirs], out)


def plot_runs_and_grad_flow(run_dirs: Sequence[Path | str], out: Path | str) -> list[Path]:
    """`resnetlab plot`: the curves (plots.plot_runs) as OUT, and when a run logged gradient norms their gradient
    flow beside it as OUT_gradflow.png (DIR/gradflow.png for a folder); returns the files written."""
    curves = plot_runs(run_dirs, out)
    runs = [(Path(d).name, read_metrics(d)) for d in run_dirs]
    if not any(has_grad_norms(rows) for _, rows in runs):
        return [curves]
    path = curves.parent / "gradflow.png" if Path(out).is_dir() else curves.with_name(f"{curves.stem}_gradflow.png")
    return [curves, draw_grad_flow(runs, path)]
