"""`resnetlab evaluate`: score a run or checkpoint (`inference.evaluate.score`), then draw its confusion matrix and
the most confidently wrong images next to the numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resnetlab.inference.evaluate import score, tta_name
from resnetlab.reports import plots
from resnetlab.reports.explain import captum_available, plot_gradcam_wrong


def evaluate_run(path: Path | str, split: str = "test", tta: bool | str = False, *, data: str | None = None,
                 data_dir: Path | str | None = None, device: str = "auto",
                 batch_size: int | None = None, gradcam: bool | None = None) -> dict[str, Any]:
    """`resnetlab.evaluate` (see there), plus plots/confusion_<tag>.png and plots/wrong_<tag>.png, and with
    `gradcam` plots/gradcam_wrong_<tag>.png (Grad-CAM of the most confidently wrong images; needs captum; None:
    when captum is installed, so that `resnetlab report` after `resnetlab evaluate` finds every piece).

    Returns:
        The metrics with per-class rows, split, tta, checkpoint, step and the files written.
    """
    scored = score(path, split, data, tta, data_dir=data_dir, device=device, batch_size=batch_size)
    result, out, tag = scored.result, scored.out_dir, scored.tag
    classes = [row["class"] for row in result["per_class"]]
    title = f"{result['model']} on {plots.short_data_name(result['data'])} {split}" + (
        f" ({tta_name(tta)} TTA)" if tta else "")
    result["files"]["confusion plot"] = str(plots.plot_confusion(result["confusion_matrix"], classes,
                                                                 out / "plots" / f"confusion_{tag}.png", title=title))
    result["files"]["wrong predictions"] = str(plots.plot_wrong(scored.images, scored.targets, scored.scores, classes,
                                                                out / "plots" / f"wrong_{tag}.png"))
    if gradcam or (gradcam is None and captum_available()):
        result["files"]["Grad-CAM of wrong predictions"] = str(plot_gradcam_wrong(
            scored, out / "plots" / f"gradcam_wrong_{tag}.png"))
    return result
