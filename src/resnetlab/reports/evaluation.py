"""`resnetlab evaluate`: score a run or checkpoint with the engine, then draw its confusion matrix and the most
confidently wrong images next to the numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resnetlab.engine.evaluate import score_run
from resnetlab.reports import plots


def evaluate_run(path: Path | str, split: str = "test", tta: bool = False,
                 data_dir: Path | str | None = None) -> dict[str, Any]:
    """Metrics of a run's best checkpoint (or any checkpoint) on one split, with their files and plots.

    Writes eval_<split>.json, confusion_<split>.csv, plots/confusion_<split>.png and plots/wrong_<split>.png into
    the run directory (or next to a checkpoint outside a run directory).

    Returns:
        `Metrics.compute()` with per-class rows, plus split, tta, checkpoint, step and the files written.
    """
    scored = score_run(path, split=split, tta=tta, data_dir=data_dir)
    result, out = scored.result, scored.out_dir
    classes = [row["class"] for row in result["per_class"]]
    title = f"{result['model']} on {plots.short_data_name(result['data'])} {split}"
    result["files"]["confusion plot"] = str(plots.plot_confusion(result["confusion_matrix"], classes,
                                                                 out / "plots" / f"confusion_{split}.png",
                                                                 title=title))
    result["files"]["wrong predictions"] = str(plots.plot_wrong(scored.images, scored.targets, scored.scores, classes,
                                                                out / "plots" / f"wrong_{split}.png"))
    return result
