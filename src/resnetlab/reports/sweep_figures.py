"""Sweep figures: the paper's Figure 6 layout, error against depth, or error against any grid key.

Drawn with matplotlib's object API (`Figure`), so no backend or pyplot state is touched, and written whole through
the one atomic writer (`engine.figurefile.save_figure`).
"""

from __future__ import annotations

import logging
import re
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from resnetlab.engine.figurefile import save_figure
from resnetlab.experiments.spec import SweepSpec, format_value, grid_labels, point_label
from resnetlab.reports.gradflow import draw_grad_flow, has_grad_norms
from resnetlab.reports.sweep_data import PointStats

logger = logging.getLogger(__name__)

MODEL_KEY = "model.name"
FAMILY_RE = re.compile(r"^(plain|resnet)(\d+)$")
FAMILY_TITLES = {"plain": "plain", "resnet": "ResNet"}
DPI = 120


def family_depth(name: Any) -> tuple[str, int] | None:
    """`("plain", 20)` for "plain20", `("resnet", 110)` for "resnet110"; None for other names."""
    match = FAMILY_RE.match(str(name))
    return (match.group(1), int(match.group(2))) if match else None


def draw_figures(out: Path, spec: SweepSpec, points: Sequence[PointStats]) -> list[Path]:
    """Draw every figure that fits the grid into `out`; returns the files written.

    A grid over `model.name` alone whose names are plain*/resnet* gets figure6.png and error_vs_depth.png;
    any other grid gets error_vs_<first grid key>.png (one line per combination of the other keys).
    """
    flow = _grad_flow(points, out / "gradflow.png")  # train.grad_norms: the first seed of every point
    varying = [k for k, values in spec.grid.items() if len(values) > 1]
    names = spec.grid.get(MODEL_KEY, [])
    if varying == [MODEL_KEY] and all(family_depth(n) for n in names):
        return [figure6(points, out / "figure6.png"), training_loss(points, out / "training_loss.png"),
                error_vs_depth(points, out / "error_vs_depth.png"), *flow]
    if MODEL_KEY in varying:
        logger.info("figure6.png needs a grid over plain*/resnet* names only; drawing error against %s", varying[0])
    key = varying[0] if varying else next(iter(spec.grid))
    label = grid_labels(list(spec.grid))[key] or "model"
    return [error_vs_key(spec, points, key, out / f"error_vs_{label.replace('.', '-')}.png"), *flow]


def _grad_flow(points: Sequence[PointStats], path: Path) -> list[Path]:
    """gradflow.png when the runs logged gradient norms: one panel per grid point (its first seed), side by side."""
    runs = [(f"{point_label(p.values)} (seed {p.runs[0].point.seed})", p.runs[0].curve) for p in points if p.runs]
    if not any(has_grad_norms(rows) for _, rows in runs):
        return []
    return [draw_grad_flow(runs, path, "Gradient norm of each stage against iteration, first seed of each point "
                                       "(dark: first layers, light: classifier)")]


def figure6(points: Sequence[PointStats], path: Path) -> Path:
    """Plain nets left, residual nets right; training error (over each logging interval) thin and dashed,
    validation error bold, against iterations, one colour per depth (the same colour in both panels); curves are
    the mean over seeds."""
    def draw(ax: Axes, p: PointStats, colour: str, name: str) -> None:
        train_steps, train_err = mean_curve(p, "train_acc")
        val_steps, val_err = mean_curve(p, "val_acc")
        ax.plot(train_steps, train_err, color=colour, linewidth=0.8, linestyle="--")
        if val_err:
            ax.plot(val_steps, val_err, color=colour, linewidth=2.2, label=name)
        else:
            ax.plot([], [], color=colour, linewidth=2.2, label=f"{name} (no validation split)")

    return _plain_and_residual(points, path, draw, "error (%)",
                               "Figure 6 layout (He et al. 2016): dashed = training error, bold = validation error, "
                               "mean over seeds.\nThe paper drew test error; we never read the test split during "
                               "training.", from_zero=True)


def training_loss(points: Sequence[PointStats], path: Path) -> Path:
    """Training loss (over each logging interval, mean over seeds) against iterations, plain nets left, residual
    nets right, one colour per depth: the figure the fourth tutorial draws (its Figures 2 and 3)."""
    def draw(ax: Axes, p: PointStats, colour: str, name: str) -> None:
        steps, losses = mean_loss_curve(p, "train_loss")
        ax.plot(steps, losses, color=colour, linewidth=1.4, label=name)

    return _plain_and_residual(points, path, draw, "training loss",
                               "Training loss against iterations (over each logging interval, mean over seeds)")


def _plain_and_residual(points: Sequence[PointStats], path: Path, draw: Callable[[Axes, PointStats, str, str], None],
                        ylabel: str, title: str, from_zero: bool = False) -> Path:
    """Two panels, plain nets left and residual nets right, `draw` called for each point in order of depth with
    its panel, colour (one per depth, the same in both panels) and name."""
    depths = sorted({family_depth(p.values[MODEL_KEY])[1] for p in points})
    colours = {d: f"C{i % 10}" for i, d in enumerate(depths)}
    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, family in zip(axes, ("plain", "resnet"), strict=True):
        for p in sorted(points, key=lambda p: family_depth(p.values[MODEL_KEY])[1]):
            fam, depth = family_depth(p.values[MODEL_KEY])
            if fam == family:
                draw(ax, p, colours[depth], f"{FAMILY_TITLES[fam]}-{depth}")
        ax.set_title("plain networks" if family == "plain" else "residual networks (ResNet)")
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=8)
    axes[0].set_ylabel(ylabel)
    if from_zero:
        axes[0].set_ylim(bottom=0)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=DPI)
    return path


def mean_loss_curve(point: PointStats, field: str) -> tuple[list[int], list[float]]:
    """`field` (train_loss or val_loss) at the steps where every seed of the point logged it, mean over seeds."""
    per_run = [{row["step"]: row[field] for row in r.curve if row.get(field) is not None} for r in point.runs]
    steps = sorted(set.intersection(*(set(rows) for rows in per_run))) if per_run else []
    return steps, [statistics.fmean(rows[step] for rows in per_run) for step in steps]


def error_vs_depth(points: Sequence[PointStats], path: Path) -> Path:
    """Final-model test error (mean ± sample std over seeds) against depth, plain against residual."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    all_depths: set[int] = set()
    for i, family in enumerate(("plain", "resnet")):
        rows = sorted((family_depth(p.values[MODEL_KEY])[1], p.errors("test_acc_final")) for p in points
                      if family_depth(p.values[MODEL_KEY])[0] == family and p.errors("test_acc_final"))
        if rows:
            depths = [d for d, _ in rows]
            ax.errorbar(depths, [statistics.fmean(e) for _, e in rows], yerr=[_std(e) for _, e in rows],
                        marker="o", capsize=4, color=f"C{i}", label=FAMILY_TITLES[family])
            all_depths.update(depths)
    ax.set_xticks(sorted(all_depths))
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("test error of the final model (%)")
    ax.set_title("Test error against depth (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=DPI)
    return path


def error_vs_key(spec: SweepSpec, points: Sequence[PointStats], key: str, path: Path) -> Path:
    """Final-model test error (mean ± std) against the values of grid key `key`; one line per combination of
    the other grid keys. Numeric values are placed on a numeric axis (log when they span 8x or more)."""
    values = spec.grid[key]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    position = {format_value(v): (v if numeric else i) for i, v in enumerate(values)}
    series: dict[str, list[tuple[float, list[float]]]] = {}
    for p in points:
        rest = {k: v for k, v in p.values.items() if k != key}
        series.setdefault(point_label(rest) if rest else "", []).append(
            (position[format_value(p.values[key])], p.errors("test_acc_final")))
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    for label, rows in series.items():
        rows = sorted((x, e) for x, e in rows if e)
        if rows:
            ax.errorbar([x for x, _ in rows], [statistics.fmean(e) for _, e in rows], yerr=[_std(e) for _, e in rows],
                        marker="o", capsize=4, label=label or None)
    if numeric and min(values) > 0 and max(values) / min(values) >= 8:
        ax.set_xscale("log")
    ax.set_xticks(list(position.values()), [format_value(v) for v in values])
    ax.set_xlabel(key)
    ax.set_ylabel("test error of the final model (%)")
    ax.set_title(f"Test error against {key} (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    if any(series):
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=DPI)
    return path


def mean_curve(point: PointStats, field: str) -> tuple[list[int], list[float]]:
    """Error (%) from `field` (train_acc: over each logging interval; val_acc: at each evaluation) at the steps
    where every seed of the point logged it, averaged over the seeds; empty when no run has it."""
    per_run = [{row["step"]: row[field] for row in r.curve if row.get(field) is not None} for r in point.runs]
    steps = sorted(set.intersection(*(set(rows) for rows in per_run))) if per_run else []
    return steps, [100.0 * (1.0 - statistics.fmean(rows[step] for rows in per_run)) for step in steps]


def _std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0
