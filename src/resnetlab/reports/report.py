"""RUN_DIR/report.html: one self-contained page about a run, to keep or send.

Every image is inlined as a base64 data URI and the CSS is inline, so the file works offline and as an
e-mail attachment; nothing refers to an external URL. Missing pieces are generated first: the test-set
evaluation (eval_test.json, confusion matrix, most confidently wrong images), the training curves and the
grid of training images. A piece that cannot be made (e.g. the data set is not on this machine) is shown as
a note instead of failing the whole report.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from resnetlab.engine.rundir import (
    BEST,
    RERUN,
    atomic_write,
    best_checkpoint,
    evaluation_tag,
    read_config,
    read_evaluation,
    read_metrics,
    read_summary,
)
from resnetlab.errors import UserError
from resnetlab.inference.evalrecord import is_current
from resnetlab.inference.evaluate import tta_name
from resnetlab.reports import plots
from resnetlab.reports.evaluation import evaluate_run
from resnetlab.reports.explain import INSTALL_HINT, captum_available

log = logging.getLogger(__name__)

SPLIT = "test"

CSS = """
* { box-sizing: border-box; }
body { margin: 0; background: #f3f4f6; color: #1f2933; font: 15px/1.45 system-ui, -apple-system, "Segoe UI",
       Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background: #1f3a5f; color: #fff; padding: 22px 32px 18px; }
header h1 { margin: 0 0 4px; font-size: 24px; font-weight: 600; }
header p { margin: 0; color: #c8d6e8; }
main { max-width: 1240px; margin: 0 auto; padding: 20px 24px 40px; }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 12px; margin-bottom: 18px; }
.kpi { background: #fff; border-radius: 8px; padding: 12px 16px; box-shadow: 0 1px 3px rgba(0,0,0,.08); }
.kpi .v { font-size: 24px; font-weight: 600; color: #1f3a5f; }
.kpi .l { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: #6b7785; }
section { background: #fff; border-radius: 8px; padding: 16px 20px 20px; margin-bottom: 18px;
          box-shadow: 0 1px 3px rgba(0,0,0,.08); }
section h2 { margin: 0 0 10px; font-size: 18px; font-weight: 600; color: #1f3a5f; }
.note { color: #6b7785; font-size: 13px; margin: 4px 0 10px; }
.warn { background: #fff7e6; border-left: 4px solid #f0a020; padding: 8px 12px; color: #6b4a00; }
.figure { text-align: center; }
.figure img { max-width: 100%; height: auto; border: 1px solid #e5e7eb; border-radius: 4px; }
.figure.narrow img { max-width: min(100%, 820px); }
.row { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 18px; }
.row > section { margin-bottom: 0; }
.stack { margin-bottom: 18px; }
@media (max-width: 900px) { .row { grid-template-columns: minmax(0, 1fr); } .row > section { margin-bottom: 18px; } }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; }
th, td { padding: 5px 10px; border-bottom: 1px solid #eceef1; text-align: right; white-space: nowrap; }
th { background: #f7f8fa; color: #4b5563; font-weight: 600; }
td.k, th.k { text-align: left; }
table.kv { table-layout: fixed; }
table.kv td.k { width: 38%; }
table.kv td:not(.k) { white-space: normal; overflow-wrap: anywhere; }
tr.avg td { font-weight: 600; background: #fafbfc; }
.bar { display: inline-block; height: 8px; background: #5b8fd0; border-radius: 2px; vertical-align: middle;
       margin-left: 6px; }
pre { background: #f7f8fa; border: 1px solid #eceef1; border-radius: 4px; padding: 10px 12px; overflow: auto;
      font-size: 12.5px; max-height: 520px; margin: 0; }
footer { color: #8a94a0; font-size: 12px; text-align: center; padding: 10px; }
"""


# ------------------------------------------------------------------------------------ generating pieces


def _attempt(what: str, make: Callable[[], Any], notes: list[str]) -> Any:
    """Run `make`; on a UserError (e.g. data not on this machine) record a note instead of failing."""
    try:
        return make()
    except UserError as exc:
        log.warning("report: no %s (%s)", what, exc)
        notes.append(f"No {what}: {exc}")
        return None


def _test_tta(run_dir: Path) -> bool | str:
    """The run's own test-time augmentation (eval.tta): the report scores best.pt as the run's final test did, so
    that its numbers are summary.json's."""
    try:
        return read_config(run_dir).eval.tta
    except UserError:
        return False


def _ensure_pieces(run_dir: Path, tta: bool | str) -> list[str]:
    """Generate the evaluation, plots and image grids the report shows; returns notes for what failed."""
    notes: list[str] = []
    tag = evaluation_tag(SPLIT, tta=tta)
    plot_dir = run_dir / "plots"
    if (run_dir / "metrics.jsonl").is_file():
        _attempt("training curves", lambda: plots.plot_curves(run_dir), notes)
        _attempt("learning-rate plot", lambda: plots.plot_lr(run_dir), notes)
    else:
        notes.append("No training curves: metrics.jsonl is missing.")
    needed = [run_dir / f"eval_{tag}.json", plot_dir / f"confusion_{tag}.png", plot_dir / f"wrong_{tag}.png"]
    gradcam = plot_dir / f"gradcam_wrong_{tag}.png"
    explainable = captum_available()
    if not all(p.is_file() for p in needed) or not _evaluation_is_current(run_dir, tag):
        gradcam.unlink(missing_ok=True)  # drawn from the old checkpoint's mistakes
        _attempt("test-set evaluation", lambda: evaluate_run(run_dir, split=SPLIT, tta=tta, gradcam=explainable), notes)
    if not gradcam.is_file():
        if not explainable:
            notes.append(f"No Grad-CAM of the wrong test images: it needs captum ({INSTALL_HINT}).")
        elif all(p.is_file() for p in needed):  # evaluated before (resnetlab evaluate): score again for the maps
            _attempt("Grad-CAM of the wrong test images",
                     lambda: evaluate_run(run_dir, split=SPLIT, tta=tta, gradcam=True), notes)
    result = read_evaluation(run_dir, tag)
    if result and "per_class" in result:
        _attempt("per-class plot", lambda: plots.plot_per_class(result, plot_dir / f"per_class_{tag}.png"), notes)
    if not (plot_dir / "train_samples.png").is_file():
        _attempt("training-image grid", lambda: plots.plot_train_samples(run_dir), notes)
    return notes


def _evaluation_is_current(run_dir: Path, tag: str) -> bool:
    """Whether eval_<tag>.json scored best.pt as it is now (by its sha256); else it is scored again. An evaluation
    without a checkpoint to compare with (best.pt gone) is kept: there is nothing newer to score."""
    result = read_evaluation(run_dir, tag)
    best = best_checkpoint(run_dir)
    if not best.is_file():
        return True
    if is_current(result, best):
        return True
    recorded = (result or {}).get("step")
    log.info("report: eval_%s.json scored %s, not %s as it is now; scoring it again", tag,
             f"the checkpoint of step {recorded}" if recorded is not None else "another checkpoint", BEST)
    return False


# ------------------------------------------------------------------------------------------- HTML parts


def _img(path: Path, alt: str, narrow: bool = False) -> str:
    if not path.is_file():
        return f'<p class="note">({html.escape(path.name)} is not available)</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    css = "figure narrow" if narrow else "figure"
    return f'<div class="{css}"><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"></div>'


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, float) and ("acc" in key or key.endswith("_err")):
        return f"{100 * value:.2f}%"
    if isinstance(value, float) and key.endswith("_s"):
        return f"{value:,.1f} s" if key != "images_per_s" else f"{value:,.0f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


# summary.json keys in words (the report never shows a raw key); keys not listed are shown as they are.
SUMMARY_LABELS = {
    "test_acc": "test accuracy, best-validation model", "test_acc_final": "test accuracy, final model",
    "test_loss": "test loss, best-validation model", "test_loss_final": "test loss, final model",
    "best_val_acc": "best validation accuracy", "best_step": "iteration of the best validation accuracy",
    "final_train_acc": "training accuracy, last logging interval", "params": "parameters",
    "macs": "multiply-accumulates per image", "steps": "iterations", "epochs": "epochs",
    "train_time_s": "training time", "wall_time_s": "wall time of the command", "images_per_s": "images per second",
    "model": "model", "data": "data set", "recipe": "recipe", "seed": "seed", "device": "device",
    "world_size": "processes", "amp": "mixed precision", "compile": "torch.compile", "stopped_early": "stopped early",
}
PROVENANCE_LABELS = {
    "resnetlab": "resnetlab", "git_commit": "git commit", "python": "Python", "torch": "PyTorch",
    "torchvision": "torchvision", "device": "device", "gpu": "GPU", "cuda": "CUDA", "cpu": "CPU",
    "cpu_capability": "CPU kernels", "threads": "CPU threads", "platform": "platform", "date": "date (UTC)",
    "command": "command", "amp": "mixed precision", "compile": "torch.compile",
}


def _kv_table(data: dict[str, Any], labels: dict[str, str]) -> str:
    """Key and value rows; a value that is not there (None: not stopped early, no MACs) is left out, and a long
    value (the command line) wraps inside its cell rather than pushing the others off the page."""
    rows = "".join(f'<tr><td class="k">{html.escape(labels.get(str(k), str(k)))}</td>'
                   f'<td>{html.escape(_fmt(str(k), v))}</td></tr>' for k, v in data.items()
                   if not isinstance(v, dict) and v is not None)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def _kpis(summary: dict[str, Any] | None, result: dict[str, Any] | None, run_dir: Path) -> str:
    """The cards on top: errors (one unit for every rate), then size and cost."""
    items: list[tuple[str, str]] = []
    acc = (result or {}).get("acc", (summary or {}).get("test_acc"))
    if acc is not None:
        items.append(("test error (top-1)", f"{100 * (1 - acc):.2f}%"))
    if result and result.get("acc5") is not None:
        items.append((f"test error (top-{result.get('top_k', 5)})", f"{100 * (1 - result['acc5']):.2f}%"))
    if summary and summary.get("best_val_acc") is not None:
        items.append(("best validation error", f"{100 * (1 - summary['best_val_acc']):.2f}%"))
    items += _training_kpis(run_dir)
    if summary:
        for key, label in (("params", "parameters"), ("steps", "iterations"), ("train_time_s", "training time")):
            if summary.get(key) is not None:
                items.append((label, _fmt(key, summary[key])))
    cells = "".join(f'<div class="kpi"><div class="v">{html.escape(v)}</div><div class="l">{html.escape(label)}</div>'
                    "</div>" for label, v in items)
    return f'<div class="kpis">{cells}</div>' if cells else ""


def _training_kpis(run_dir: Path) -> list[tuple[str, str]]:
    """Final training error and loss: of a full pass in eval mode when `evaluate --split train` wrote
    eval_train.json, else the running numbers of the last logging interval (metrics.jsonl)."""
    full = read_evaluation(run_dir, "train")
    if full:
        where = "full pass, eval mode"
        acc, loss = full.get("acc"), full.get("loss")
    else:
        rows = [r for r in read_metrics(run_dir, required=False) if r.get("train_loss") is not None]
        if not rows:
            return []
        where = "last logging interval"
        acc, loss = rows[-1].get("train_acc"), rows[-1]["train_loss"]
    items = [(f"final training error ({where})", f"{100 * (1 - acc):.2f}%")] if acc is not None else []
    return items + ([(f"final training loss ({where})", f"{loss:.4f}")] if loss is not None else [])


def _per_class_table(result: dict[str, Any]) -> str:
    def row(name: str, r: dict[str, Any], cls: str = "") -> str:
        bar = f'<span class="bar" style="width:{60 * r["f1"]:.0f}px"></span>'
        return (f'<tr class="{cls}"><td class="k">{html.escape(name)}</td><td>{r["precision"]:.4f}</td>'
                f'<td>{r["recall"]:.4f}</td><td>{r["f1"]:.4f}{bar}</td><td>{r["support"]:,}</td></tr>')

    body = "".join(row(r["class"], r) for r in result["per_class"])
    body += row("macro avg", result["macro"], "avg") + row("weighted avg", result["weighted"], "avg")
    head = ('<tr><th class="k">class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>')
    return f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"


def _section(title: str, body: str, note: str = "") -> str:
    note_html = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return f"<section><h2>{html.escape(title)}</h2>{note_html}{body}</section>"


def _evaluation_sections(run_dir: Path, result: dict[str, Any] | None, tag: str) -> list[str]:
    plot_dir = run_dir / "plots"
    if not result:
        return []
    tta = f" with test-time augmentation ({tta_name(result['tta'])})" if result.get("tta") else ""
    headline = (f"top-1 accuracy {100 * result['acc']:.2f}%, top-{result.get('top_k', 5)} accuracy "
                f"{100 * result['acc5']:.2f}%, loss {result['loss']:.4f} on {result['n']:,} {SPLIT} images{tta}; "
                f"checkpoint {Path(str(result.get('checkpoint', '?'))).name}.")
    table = _section("Per-class precision, recall and F1", _per_class_table(result), headline)
    chart = _section("Per-class scores", _img(plot_dir / f"per_class_{tag}.png", "per-class scores"))
    confusion = _section("Confusion matrix", _img(plot_dir / f"confusion_{tag}.png", "confusion matrix", True),
                         "Rows are the true class, columns the prediction; colour = fraction of the row.")
    wrong = _section("Most confidently wrong test images", _img(plot_dir / f"wrong_{tag}.png", "wrong predictions"),
                     "True and predicted label with the predicted probability, most confident mistakes first.")
    gradcam = _section("Where the model looked in its most confident mistakes (Grad-CAM)",
                       _img(plot_dir / f"gradcam_wrong_{tag}.png", "Grad-CAM of wrong predictions"),
                       "The same mistakes with the Grad-CAM map of the predicted class over each image (red = the "
                       "evidence for that class; Selvaraju et al. 2017, computed with captum on the last residual "
                       "stage). A map on the background rather than the object points at a spurious cue.")
    return [f'<div class="row stack">{table}{chart}</div>', f'<div class="stack">{confusion}</div>',
            f'<div class="stack">{wrong}</div>', f'<div class="stack">{gradcam}</div>']


def _render(run_dir: Path, notes: list[str], tag: str) -> str:
    summary = read_summary(run_dir, strict=False)
    result = read_evaluation(run_dir, tag)
    config_path = run_dir / "config.yaml"
    config = config_path.read_text() if config_path.is_file() else "(config.yaml is missing)"
    model, data = _model_and_data(config)
    status = "finished" if summary else "not finished (no summary.json yet)"
    warn = "".join(f'<p class="warn">{html.escape(n)}</p>' for n in notes)
    curves = _section("Training curves", _img(run_dir / "plots" / "curves.png", "loss and error against iteration"),
                      "Training (thin, dashed; over each logging interval) and validation (bold) loss and top-1 "
                      "error against iteration, drawn like Figure 6 of He et al. (2016)." + _loss_note(run_dir)
                      + _mixing_note(run_dir))
    lr = _section("Learning rate", _img(run_dir / "plots" / "lr.png", "learning rate against iteration"))
    samples = _section("Training images as the model sees them",
                       _img(run_dir / "plots" / "train_samples.png", "training images"),
                       "One batch from the training loader: augmented, then un-normalized for display.")
    summary_html = _section("Summary", _kv_table(summary, SUMMARY_LABELS) if summary else
                            '<p class="note">No summary.json.</p>')
    provenance = (summary or {}).get("provenance")
    provenance_html = _section("Where it ran", _kv_table(provenance, PROVENANCE_LABELS) if provenance else
                               '<p class="note">Not recorded (a run of resnetlab before 0.2).</p>',
                               "Software, hardware, date and command: bit-identical results are promised on the "
                               "same versions and CPU kernels only.")
    config_html = _section("Configuration", f"<pre>{html.escape(config)}</pre>",
                           f"{config_path.name}: re-running it with --recipe reproduces the run.")
    parts = [
        f"<header><h1>{html.escape(run_dir.name)}</h1><p>{html.escape(model)} on {html.escape(data)} "
        f"&middot; run {status} &middot; {html.escape(str(run_dir.resolve()))}</p></header><main>",
        warn, _kpis(summary, result, run_dir), f'<div class="stack">{curves}</div>',
        *_evaluation_sections(run_dir, result, tag), f'<div class="stack">{samples}</div>',
        f'<div class="row stack">{summary_html}{lr}</div>', f'<div class="stack">{provenance_html}</div>',
        f'<div class="stack">{config_html}</div>',
        "</main><footer>written by resnetlab &middot; self-contained: every image is embedded in this file</footer>",
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>resnetlab report: {html.escape(run_dir.name)}</title><style>{CSS}</style></head><body>"
            + "\n".join(p for p in parts if p) + "</body></html>\n")


def _loss_note(run_dir: Path) -> str:
    """Why the training loss may sit above the validation loss, when it does and the run regularizes."""
    try:
        rows = [r for r in read_metrics(run_dir) if r.get("val_loss") is not None and r.get("train_loss") is not None]
        cfg = read_config(run_dir)
    except UserError:
        return ""
    if not rows or rows[-1]["train_loss"] <= rows[-1]["val_loss"]:
        return ""
    d, t = cfg.data, cfg.train
    causes = [f"label smoothing {t.label_smoothing:g}"] if t.label_smoothing else []
    if d.crop_padding or d.flip or d.translate or d.cutout or d.auto_augment or d.random_erasing:
        causes.append("augmentation")
    if (d.mixup_alpha or d.cutmix_alpha) and d.mix_prob:
        causes.append("Mixup/CutMix")
    if not causes:
        return ""
    return (f" The training loss ends above the validation loss: {' and '.join(causes)} apply to the training loss "
            "only (the validation images are neither augmented nor smoothed), so this is not a sign of a problem.")


def _mixing_note(run_dir: Path) -> str:
    """How the training accuracy was counted, when the run mixed its training batches (Mixup/CutMix)."""
    try:
        d = read_config(run_dir).data
    except UserError:
        return ""
    if not (d.mixup_alpha or d.cutmix_alpha) or not d.mix_prob:
        return ""
    return (" Training batches were mixed (Mixup/CutMix): the training accuracy counts each prediction by the share "
            "its class has in the mixed target (lam for the image's own label, 1 - lam for its partner's), so it stays "
            "below 100% even for a perfect fit; validation and test images are not mixed.")


def _model_and_data(config_text: str) -> tuple[str, str]:

    try:
        config = yaml.safe_load(config_text) or {}
        return str(config["model"]["name"]), str(config["data"]["name"])
    except (yaml.YAMLError, KeyError, TypeError):
        return "?", "?"


def write_report(run_dir: Path | str) -> Path:
    """Write RUN_DIR/report.html (self-contained), generating the evaluation and plots it needs.

    Args:
        run_dir: a run directory written by `resnetlab train`.

    Returns:
        The path of report.html.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); pass the --out of 'resnetlab train'")
    tta = _test_tta(run_dir)
    notes = _ensure_pieces(run_dir, tta)
    out = atomic_write(run_dir / "report.html", _render(run_dir, notes, evaluation_tag(SPLIT, tta=tta)), rerun=RERUN)
    log.info("wrote %s", out)
    return out
