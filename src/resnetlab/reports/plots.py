"""PNG plots of a run: training curves, several runs overlaid, image grids (samples of a data set, a training
batch, wrong predictions) and the confusion matrix.

Figures are built with matplotlib's object API (`Figure` + the Agg canvas, never `pyplot`), so no global
backend is switched and nothing needs a display.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

from resnetlab.data import ImageSet
from resnetlab.engine.builders import build_data, make_loader, scaled_lr
from resnetlab.engine.config import Config
from resnetlab.engine.figurefile import figure_path, save_figure
from resnetlab.engine.rundir import read_config, read_metrics, read_summary
from resnetlab.engine.schedule import LRSchedule
from resnetlab.errors import UserError

log = logging.getLogger(__name__)

DPI = 110
# The paper's Figure 6 draws training error thin and dashed and test error bold; we follow it with validation.
TRAIN_STYLE = {"linewidth": 0.9, "linestyle": "--", "alpha": 0.85}
VAL_STYLE = {"linewidth": 2.2}


def _save(fig: Figure, out: Path | str) -> Path:
    """Save `fig` as `figure_path(out)`; returns the path really written."""
    out = save_figure(fig, figure_path(out), dpi=DPI, tight=True)  # drawn in memory, then written whole
    log.info("wrote %s", out)
    return out


def short_data_name(name: str) -> str:
    """A data set name for a title: `imagefolder:/long/path/shapes` -> `imagefolder:shapes`."""
    kind, sep, path = name.partition(":")
    return f"{kind}:{Path(path).name or path}" if sep else name


# ------------------------------------------------------------------------------------------------ curves


def _series(records: list[dict[str, Any]], key: str, error: bool) -> tuple[list[float], list[float]]:
    """(steps, values) where `key` is present; accuracies become error in percent."""
    pairs = [(r["step"], r[key]) for r in records if r.get(key) is not None]
    return [s for s, _ in pairs], [100 * (1 - v) if error else v for _, v in pairs]


def _run_label(run_dir: Path) -> str:
    summary = read_summary(run_dir, strict=False) or {}
    best = summary.get("test_acc")
    return f"{run_dir.name} ({100 * (1 - best):.2f}% test err)" if best is not None else run_dir.name


def _draw_runs(axes: Sequence[Axes], runs: Sequence[tuple[str, list[dict[str, Any]]]]) -> None:
    """Loss (left) and error (right) against iteration, one colour per run."""
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for (name, records), color in zip(runs, colors, strict=True):
        label = f"{name} " if len(runs) > 1 else ""
        for ax, kind, error in ((axes[0], "loss", False), (axes[1], "acc", True)):
            steps, values = _series(records, f"train_{kind}", error)
            if steps:
                ax.plot(steps, values, color=color, label=f"{label}train", **TRAIN_STYLE)
            steps, values = _series(records, f"val_{kind}", error)
            if steps:
                ax.plot(steps, values, color=color, label=f"{label}validation", marker="o" if len(steps) < 3 else None,
                        **VAL_STYLE)
    for ax, ylabel in zip(axes, ("loss", "error (%)"), strict=True):
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    if axes[0].lines and all(min(line.get_ydata()) > 0 for line in axes[0].lines):
        axes[0].set_yscale("log")
        axes[0].yaxis.set_major_formatter(PlainLogFormatter())
        axes[0].yaxis.set_minor_formatter(PlainLogFormatter(minor_thresholds=(2, 0.5)))


class PlainLogFormatter(LogFormatter):
    """Log-axis labels as plain numbers (2, 0.5, 10), not matplotlib's "2 × 10⁰" on a loss axis of a narrow range;
    which ticks get a label is still matplotlib's choice (every minor one only over a short range)."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return f"{x:g}"


def plot_runs(run_dirs: Sequence[Path | str], out: Path | str, title: str | None = None) -> Path:
    """Training curves of one or more runs overlaid (train thin dashed, validation bold, as in Figure 6).

    Args:
        run_dirs: run directories holding metrics.jsonl.
        out: the PNG to write.
        title: figure title (default: none for several runs, the run's name for one).

    Returns:
        The path of the PNG.
    """
    if not run_dirs:
        raise UserError("give at least one run directory to plot")
    figure_path(out)  # a bad --out fails before the runs are read
    runs = [(_run_label(Path(d)), read_metrics(d)) for d in run_dirs]
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    _draw_runs(axes, runs)
    if title or len(runs) == 1:
        fig.suptitle(title or runs[0][0])
    fig.tight_layout()
    return _save(fig, out)


def plot_curves(run_dir: Path | str) -> Path:
    """RUN_DIR/plots/curves.png: the run's loss and error against iteration."""
    run_dir = Path(run_dir)
    return plot_runs([run_dir], run_dir / "plots" / "curves.png")


# ------------------------------------------------------------------------------------------- image grids


def _to_hwc(image: torch.Tensor) -> Any:
    """A C x H x W tensor (uint8, or float in [0, 1]) as an array imshow understands."""
    image = image.detach().cpu()
    if image.dtype != torch.uint8:
        image = (image.float().clamp(0, 1) * 255).round().to(torch.uint8)
    if image.shape[0] == 1:
        return image[0].numpy()
    return image.permute(1, 2, 0).numpy()


def image_grid(
    images: torch.Tensor | Sequence[torch.Tensor],
    titles: Sequence[str],
    out: Path | str,
    *,
    ncols: int = 8,
    title: str | None = None,
    title_colors: Sequence[str] | None = None,
) -> Path:
    """A grid of images with a caption under each (grayscale for one channel, pixels kept sharp).

    Args:
        images: N x C x H x W, uint8 or float in [0, 1].
        titles: N captions.
        out: the PNG to write.
        ncols: images per row.
        title: figure title.
        title_colors: N caption colours (e.g. red for wrong predictions).
    """
    n = len(images)
    if n == 0:
        raise ValueError("no images to draw")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(1.5 * ncols, 1.9 * nrows + (0.4 if title else 0)))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(_to_hwc(images[i]), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        color = title_colors[i] if title_colors is not None else "black"
        ax.set_title(titles[i], fontsize=7.5, color=color, pad=3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out)


def plot_samples(imageset: ImageSet, out: Path | str, count: int = 32, *, seed: int = 0, ncols: int = 8,
                 title: str | None = None) -> Path:
    """A grid of `count` images of a data set, drawn at random (seeded), each captioned with its class.

    Args:
        imageset: the images as stored (`load_dataset`), before any augmentation or normalization.
        out: the PNG to write.
        count: how many images (at most the data set's size).
        seed: which images: the same seed draws the same ones.
        ncols: images per row.
        title: figure title.
    """
    index = torch.randperm(len(imageset), generator=torch.Generator().manual_seed(seed))[:count]
    titles = [imageset.classes[int(imageset.labels[i])] for i in index]
    return image_grid(imageset.images[index], titles, out, ncols=ncols, title=title)


# ---------------------------------------------------------------------------------------- confusion plot


def plot_confusion(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], out: Path | str, title: str | None = None
) -> Path:
    """The confusion matrix as a heat map: colour = row-normalised fraction (recall), text = counts.

    Args:
        matrix: K x K counts, rows = true class, columns = predicted class.
        classes: K class names.
        out: the PNG to write.
        title: figure title.
    """
    counts = torch.tensor(matrix, dtype=torch.float64)
    k = counts.shape[0]
    fractions = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    side = min(14.0, max(4.5, 0.55 * k + 2))
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.subplots()
    image = ax.imshow(fractions.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ticks = list(range(k))
    show_names = k <= 40
    ax.set_xticks(ticks, [str(c) for c in classes] if show_names else [], rotation=45, ha="right")
    ax.set_yticks(ticks, [str(c) for c in classes] if show_names else [])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 20:  # counts stay legible up to about 20 classes
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=8 if k > 10 else 10,
                        color="white" if fractions[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save(fig, out)


def plot_per_class(result: dict[str, Any], out: Path | str) -> Path:
    """Precision, recall and F1 of every class as grouped horizontal bars (from an eval_<split>.json dict)."""
    rows = result["per_class"]
    k = len(rows)
    metrics = (("precision", "#4c78a8"), ("recall", "#f58518"), ("f1", "#54a24b")) if k <= 20 else (("f1", "#54a24b"),)
    fig = Figure(figsize=(6.5, max(3.0, k * 0.16 * len(metrics) + 1.4)))
    ax = fig.subplots()
    height = 0.8 / len(metrics)
    for m, (key, color) in enumerate(metrics):
        offset = (m - (len(metrics) - 1) / 2) * height
        ax.barh([i + offset for i in range(k)], [r[key] for r in rows], height=height, color=color,
                label=key if key != "f1" else "F1")
    ax.set_yticks(range(k), [r["class"] for r in rows] if k <= 60 else [])
    ax.invert_yaxis()  # first class on top, as in the table
    ax.set_xlim(0, 1)
    ax.axvline(result["macro"]["f1"], color="gray", linestyle=":", linewidth=1, label="macro F1")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=4, frameon=False)
    fig.tight_layout()
    return _save(fig, out)


def most_confident_wrong(
    targets: torch.Tensor, scores: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices of the `count` wrong predictions with the highest predicted probability, most confident first.

    Returns:
        (indices (M,), predicted class of every image (N,), its probability (N,)), M <= count.
    """
    probs = scores.float().softmax(dim=1)  # logits and log-probabilities alike
    confidence, pred = probs.max(dim=1)
    wrong = (pred != targets).nonzero().flatten()
    order = wrong[confidence[wrong].argsort(descending=True, stable=True)][:count]
    return order, pred, confidence


def plot_wrong(
    images: torch.Tensor,
    targets: torch.Tensor,
    scores: torch.Tensor,
    classes: Sequence[str],
    out: Path | str,
    count: int = 24,
) -> Path:
    """The `count` most confidently wrong predictions with their true and predicted labels.

    Args:
        images: N x C x H x W uint8 images in the order of `scores`.
        targets: (N,) true classes.
        scores: (N, K) logits or log-probabilities (softmax gives the probabilities either way).
        classes: K class names.
        out: the PNG to write.
        count: how many images at most.
    """
    order, pred, confidence = most_confident_wrong(targets, scores, count)
    if len(order) == 0:
        fig = Figure(figsize=(6, 1.2))
        fig.text(0.5, 0.5, f"no wrong predictions among {len(targets):,} images", ha="center", va="center")
        return _save(fig, out)
    titles = [f"true: {classes[int(targets[i])]}\npred: {classes[int(pred[i])]} ({100 * float(confidence[i]):.0f}%)"
              for i in order]
    return image_grid(images[order], titles, out, title_colors=["#b00020"] * len(order))


def run_length(run_dir: Path, cfg: Config, records: list[dict[str, Any]]) -> int:
    """The run's planned iterations: train.iters, or train.epochs x the iterations per epoch its rows imply."""
    if cfg.train.iters:
        return cfg.train.iters
    per_epoch = next((r["step"] / r["epoch"] for r in records if r.get("epoch")), None)
    return round(cfg.train.epochs * per_epoch) if per_epoch else max(r["step"] for r in records)


def plot_lr(run_dir: Path | str) -> Path:
    """RUN_DIR/plots/lr.png: the learning rate against iteration over the whole planned run (the schedule, with
    the distributed lr scaling the run used, and the logged values)."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    fig = Figure(figsize=(6.5, 3.4))
    ax = fig.subplots()
    cfg = read_config(run_dir)
    total = run_length(run_dir, cfg, records)
    world_size = int((read_summary(run_dir, strict=False) or {}).get("world_size", 1))
    if cfg.schedule.name != "plateau":  # every other schedule is a pure function of the iteration
        schedule = LRSchedule(cfg.schedule, scaled_lr(cfg, world_size), total)
        steps = sorted({int(s) for s in torch.linspace(0, total - 1, min(total, 600)).tolist()})
        ax.plot(steps, [schedule.lr_at(s) for s in steps], color="C0", linewidth=1.6, label=cfg.schedule.name)
    logged = [(r["step"], r["lr"]) for r in records if r.get("lr") is not None]
    if logged:
        ax.plot(*zip(*logged, strict=True), "o", color="C3", markersize=3, label="logged")
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, run_dir / "plots" / "lr.png")


def unnormalize(x: torch.Tensor, normalization: dict[str, Any]) -> torch.Tensor:
    """Normalized images (N, C, H, W) back to [0, 1] with a run's {"mean", "std"} (per channel or per pixel)."""
    x = x.detach().float().cpu()
    mean = torch.tensor(normalization["mean"], dtype=torch.float32)
    std = torch.tensor(normalization["std"], dtype=torch.float32).view(-1, 1, 1)
    if mean.ndim == 1:
        mean = mean.view(-1, 1, 1)
    elif mean.shape[-2:] != x.shape[-2:]:  # a per-pixel mean of images resized on the device
        mean = torch.nn.functional.interpolate(mean[None], size=x.shape[-2:], mode="bilinear")[0]
    return (x * std + mean).clamp(0, 1)


def target_title(target: torch.Tensor, classes: Sequence[str]) -> str:
    """A class name, or for a mixed target (class probabilities) the two largest with their shares."""
    if target.dim() == 0:
        return classes[int(target)]
    values, indices = target.topk(min(2, len(classes)))
    if float(values[0]) >= 1:  # not mixed, or mixed with an image of the same class
        return classes[int(indices[0])]
    return " + ".join(f"{classes[int(k)]} {float(p):.2f}" for p, k in zip(values, indices, strict=True) if p > 0)


def plot_train_samples(run_dir: Path | str, count: int = 32) -> Path:
    """RUN_DIR/plots/train_samples.png: the first training batch as the loader feeds it, un-normalized.

    It shows what the network really sees: the augmentation (crops, flips, cutout, policies, erasing), the mixing
    (titled with both labels and their shares) and the resizing.
    """

    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    data = build_data(cfg)
    loader = make_loader(data.train, cfg, train=True, device=torch.device("cpu"), normalization=data.normalization)
    x, y = next(iter(loader))
    images = unnormalize(x[:count], data.normalization)
    titles = [target_title(label, data.classes) for label in y[:count]]
    return image_grid(images, titles, run_dir / "plots" / "train_samples.png",
                      title=f"training batch of {short_data_name(cfg.data.name)} (augmented, un-normalized)")
