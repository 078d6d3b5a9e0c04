"""The run directory: the one owner of its format, and of the one atomic writer everything uses.

```
RUN_DIR/config.yaml           write_config / read_config: the resolved config (re-running it reproduces the run)
RUN_DIR/metrics.jsonl         append_metrics / read_metrics / truncate_metrics: one JSON object per logging
                              interval (training metrics) and per evaluation (validation metrics too)
RUN_DIR/summary.json          write_summary / read_summary: written last, its presence means "finished"
RUN_DIR/eval_<tag>.json       write_evaluation / read_evaluation (+ confusion_<tag>.csv): `resnetlab evaluate`
RUN_DIR/checkpoints/*.pt      written by checkpoint.py through `atomic_write`: BEST (selected on validation), LAST
                              (the latest state, which --resume continues) and the top-k; `checkpoint_file` finds
                              a run's BEST
RUN_DIR/.lock                 runlock.lock_run_dir: held (fcntl) by the one process that trains the run
```

Every file is written to a temporary file in the same folder, fsynced, then renamed over the old one: a reader,
or a crash, sees the old file or the new one, never half of one. A full disk is a TrainingFailed (exit 1) that
names the file and the free space; any other failure to write (a read-only folder, a path under a file) is a
UserError (exit 2). Neither leaves the temporary file behind, and a kill that does is cleaned up by the next
process that takes the lock (`remove_stale_temp_files`).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fnmatch
import io
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from resnetlab.engine.config import Config, config_from_dict, dump_config
from resnetlab.errors import TrainingFailed, UserError

log = logging.getLogger(__name__)

CONFIG, METRICS, SUMMARY, LOCK, CHECKPOINTS = "config.yaml", "metrics.jsonl", "summary.json", ".lock", "checkpoints"
BEST, LAST = "best.pt", "last.pt"  # in CHECKPOINTS: the model selected on validation; the state --resume continues
TEMP_MARK = ".tmp-"  # temporary files are named .NAME.tmp-PID
# summary.json keys every finished run has; a file without them is corrupt (e.g. `{}` or a JSON list).
SUMMARY_KEYS = ("best_val_acc", "test_acc", "test_acc_final", "steps")
METRIC_KEYS = ("step", "epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "images_per_s", "time_s")
OPTIONAL_METRIC_KEYS = ("grad_norm",)  # in a row only when on: train.grad_norms, {group: norm}
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
RERUN_RESUME = "run the same command with --resume (the earlier checkpoints are kept)"
RERUN = "run the command again (nothing half-written was left)"
# The run format: every name resnetlab writes in a run directory (starting a run over deletes these, and only these).
OWNED_FILES = (CONFIG, METRICS, SUMMARY, LOCK, "report.html")
OWNED_GLOBS = ("eval_*.json", "confusion_*.csv")
OWNED_DIRS = {CHECKPOINTS: "*.pt", "plots": "*.png", "tb": "events.out.tfevents.*"}  # folder: its files


# ---------------------------------------------------------------------------------------- atomic writes


def atomic_write(path: str | Path, data: bytes | memoryview | str, *, rerun: str = RERUN_RESUME) -> Path:
    """Write `data` (bytes or text) to `path` atomically.

    Args:
        rerun: what to do once there is space again (the end of the disk-full message).

    Raises:
        TrainingFailed: the disk is full or read-only (the old file, if any, is kept).
        UserError: the file cannot be written (a parent that is a file, no permission).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc, rerun) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def write_error(path: Path, exc: OSError, rerun: str = RERUN_RESUME) -> Exception:
    """The one-line error for a file that could not be written: TrainingFailed (exit 1) for a full or read-only
    disk, UserError (exit 2) for a place that cannot hold a file."""
    if exc.errno in _DISK_FULL:
        free = _free_space(path.parent)
        return TrainingFailed(f"no space left on the device for {path} ({free} free); free some space, then {rerun}")
    if exc.errno == errno.EROFS:
        return TrainingFailed(f"cannot write {path}: the file system is read-only; nothing was written there "
                              "(write to another folder)")
    reason = exc.strerror or str(exc)
    return UserError(f"cannot write {path}: {reason}; choose a folder you can write to")


def _free_space(folder: Path) -> str:
    for candidate in (folder, *folder.parents):
        with contextlib.suppress(OSError):
            free = shutil.disk_usage(candidate).free
            return f"{free / 2**20:.1f} MiB" if free < 2**30 else f"{free / 2**30:.1f} GiB"
    return "unknown space"


def _fsync_dir(folder: Path) -> None:
    # The rename itself is durable only once the directory entry is flushed (POSIX; a no-op elsewhere).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temp_files(run_dir: Path) -> None:
    """Delete the temporary files a killed writer left in RUN_DIR and RUN_DIR/checkpoints (call it under the lock:
    then no other process is writing there)."""
    for folder in (run_dir, run_dir / CHECKPOINTS):
        if folder.is_dir():
            for path in folder.glob(f".*{TEMP_MARK}*"):
                with contextlib.suppress(OSError):
                    path.unlink()


# ------------------------------------------------------------------------------------------------ JSON


def write_json(path: Path, obj: Any, *, rerun: str = RERUN_RESUME) -> Path:
    """`obj` as indented JSON, atomically."""
    return atomic_write(path, json.dumps(obj, indent=2) + "\n", rerun=rerun)


def read_json(path: Path) -> Any:
    """The JSON value in `path`.

    Raises:
        UserError: the file is missing, unreadable or not JSON (the message names it).
    """
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); it is corrupt") from None


# ---------------------------------------------------------------------------------------------- config


def run_dir_of(cfg: Config) -> Path:
    """The run directory `train.out_dir` (--out), checked to be usable as a folder."""
    if not cfg.train.out_dir:
        raise UserError("train.out_dir (--out RUN_DIR) is required: where checkpoints, metrics and summary go")
    run_dir = Path(cfg.train.out_dir).expanduser()
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is a file; give a folder for the run")
    return run_dir


def write_config(run_dir: Path, cfg: Config) -> Path:
    """RUN_DIR/config.yaml: the resolved config (`--recipe` that file reproduces the run)."""
    return atomic_write(run_dir / CONFIG, dump_config(cfg))


def read_config(run_dir: Path) -> Config:
    """The Config in RUN_DIR/config.yaml.

    Raises:
        UserError: the file is missing or not a config.
    """
    path = Path(run_dir) / CONFIG
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{run_dir} is not a run directory (no {CONFIG})") from None
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path} cannot be read as YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a resnetlab config (no mapping of sections)")
    return config_from_dict(data)


# --------------------------------------------------------------------------------------------- metrics


def append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    """Append one row to RUN_DIR/metrics.jsonl (keys METRIC_KEYS, and OPTIONAL_METRIC_KEYS when present; non-finite
    numbers become null)."""
    extra = {key: {k: _finite_or_none(v) for k, v in row[key].items()} for key in OPTIONAL_METRIC_KEYS
             if isinstance(row.get(key), dict)}
    row = {key: _finite_or_none(row.get(key)) for key in METRIC_KEYS} | extra
    with open(run_dir / METRICS, "a") as f:
        f.write(json.dumps(row) + "\n")


def read_metrics(run_dir: Path | str, *, required: bool = True) -> list[dict[str, Any]]:
    """The rows of RUN_DIR/metrics.jsonl; a torn last line (a row being written) is skipped.

    Raises:
        UserError: `required` and the file is missing or holds no row yet.
    """
    path = Path(run_dir) / METRICS
    if not path.is_file():
        if required:
            raise UserError(f"{path} does not exist; pass a run directory written by 'resnetlab train'")
        return []
    rows = _metric_rows(path)
    if required and not rows:
        raise UserError(f"{path} holds no row yet; wait for the first logging interval")
    return rows


def _metric_rows(path: Path) -> list[dict[str, Any]]:
    """The well-formed rows of a metrics file; damaged ones (not JSON, not an object, a value that is not a number)
    are skipped with one warning that names them. A torn last line (a row being written) is skipped silently."""
    lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    rows, damaged = [], []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if line.strip() and number < len(lines):
                damaged.append(number)
            continue
        if isinstance(row, dict) and _well_typed(row):
            rows.append(row)
        else:
            damaged.append(number)
    if damaged:
        shown = ", ".join(map(str, damaged[:5])) + (", ..." if len(damaged) > 5 else "")
        log.warning("%s: skipped %d damaged row%s (line %s: not a row of numbers)", path, len(damaged),
                    "s" if len(damaged) > 1 else "", shown)
    return rows


def _well_typed(row: dict[str, Any]) -> bool:
    """A metrics row: a whole step, and every other metric a number or null."""
    step = row.get("step")
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not float(step).is_integer():
        return False
    return all(row.get(key) is None or (isinstance(row[key], (int, float)) and not isinstance(row[key], bool))
               for key in METRIC_KEYS)


def truncate_metrics(run_dir: Path, last_step: int) -> None:
    """Drop rows after `last_step` (an attempt that died after logging them, before its checkpoint)."""
    path = run_dir / METRICS
    if not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    keep = [line for line in lines if _row_step(line) <= last_step]
    if len(keep) != len(lines):
        atomic_write(path, "".join(line + "\n" for line in keep))


def _row_step(line: str) -> float:
    try:
        return float(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return float("inf")  # a torn line is dropped


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


# --------------------------------------------------------------------------------------------- summary


def write_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    """RUN_DIR/summary.json, written last: its presence means the run finished."""
    return write_json(run_dir / SUMMARY, summary)


def read_summary(run_dir: Path | str, *, strict: bool = True) -> dict[str, Any] | None:
    """RUN_DIR/summary.json, or None when the run has not finished (no such file).

    A corrupt file (not JSON, not an object, or without the keys every summary has) is a UserError naming it
    when `strict`; otherwise it is logged and treated as missing (the run is unfinished and can be resumed).
    """
    path = Path(run_dir) / SUMMARY
    if not path.is_file():
        return None
    try:
        summary = read_json(path)
        if not isinstance(summary, dict) or any(key not in summary for key in SUMMARY_KEYS):
            raise UserError(f"{path} is not a run summary (it lacks {', '.join(SUMMARY_KEYS)}); it is corrupt")
    except UserError as exc:
        if strict:
            raise UserError(f"{exc}; delete it and run 'resnetlab train --out {run_dir} --resume' to rewrite it") \
                from None
        log.warning("%s; treating %s as unfinished", exc, run_dir)
        return None
    return summary


def is_finished(run_dir: Path | str) -> bool:
    """Whether the run wrote a valid summary.json (a corrupt one counts as unfinished, with a warning)."""
    return read_summary(run_dir, strict=False) is not None


# --------------------------------------------------------------------------------------------- checkpoints


def best_checkpoint(run_dir: Path | str) -> Path:
    """RUN_DIR/checkpoints/best.pt: the model selected on validation (the last model without a validation split)."""
    return Path(run_dir) / CHECKPOINTS / BEST


def last_checkpoint(run_dir: Path | str) -> Path:
    """RUN_DIR/checkpoints/last.pt: the latest state of the run, which --resume continues."""
    return Path(run_dir) / CHECKPOINTS / LAST


def checkpoint_file(path: Path | str) -> Path:
    """The checkpoint a user means: a run directory's best checkpoint, or a checkpoint file as given.

    Raises:
        UserError: the path does not exist, or is a folder without a best checkpoint.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        best = best_checkpoint(path)
        if not best.is_file():
            raise UserError(f"{path} has no {CHECKPOINTS}/{BEST}; pass the --out of 'resnetlab train' or a .pt file")
        return best
    if not path.exists():
        raise UserError(f"{path} does not exist; pass a run directory or a checkpoint file")
    return path


# --------------------------------------------------------------------------------------------- evaluations


def evaluation_tag(split: str, *, tta: bool | str = False, data: str | None = None) -> str:
    """The name part of an evaluation's files: `test`, `test_tta`, `test_tta-shift`, `test_imagefolder-shapes`..."""
    tag = split
    if data:
        kind, _, where = data.partition(":")
        slug = "".join(c if c.isalnum() or c in "-." else "-" for c in (f"{kind}-{Path(where).name}" if where
                                                                          else kind))
        tag += f"_{slug}"
    return tag + ("_tta" if tta in (True, "flip") else f"_tta-{tta}" if tta else "")


def write_evaluation(out: Path, tag: str, result: dict[str, Any]) -> dict[str, str]:
    """OUT/eval_<tag>.json (the result without its file list) and OUT/confusion_<tag>.csv; returns their paths."""
    files = {"metrics": out / f"eval_{tag}.json", "confusion csv": out / f"confusion_{tag}.csv"}
    write_json(files["metrics"], {k: v for k, v in result.items() if k != "files"}, rerun=RERUN)
    if "confusion_matrix" in result:
        classes = [row["class"] for row in result["per_class"]]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["true \\ predicted", *classes])
        writer.writerows([name, *row] for name, row in zip(classes, result["confusion_matrix"], strict=True))
        atomic_write(files["confusion csv"], buffer.getvalue(), rerun=RERUN)
    else:
        del files["confusion csv"]
    return {label: str(path) for label, path in files.items()}


def read_evaluation(run_dir: Path, tag: str = "test") -> dict[str, Any] | None:
    """RUN_DIR/eval_<tag>.json, or None when there is none (a corrupt one is logged and ignored)."""
    path = Path(run_dir) / f"eval_{tag}.json"
    if not path.is_file():
        return None
    try:
        result = read_json(path)
    except UserError as exc:
        log.warning("%s", exc)
        return None
    return result if isinstance(result, dict) else None


# ---------------------------------------------------------------------------------- what a run folder holds


def _owned(rel: Path, is_file: bool) -> bool:
    """Whether RUN_DIR/rel (a plain file or a real folder, no link) is of the run format."""
    parts = rel.parts
    if len(parts) == 1:
        name = parts[0]
        if not is_file:
            return name in OWNED_DIRS
        return name in OWNED_FILES or TEMP_MARK in name or any(fnmatch.fnmatch(name, g) for g in OWNED_GLOBS)
    if len(parts) == 2 and is_file and parts[0] in OWNED_DIRS:
        return TEMP_MARK in parts[1] or fnmatch.fnmatch(parts[1], OWNED_DIRS[parts[0]])
    return False


def _walk(run_dir: Path) -> Iterator[tuple[Path, bool]]:
    """(path, owned) of every entry of RUN_DIR, and of the entries of its run-format folders; links are never
    followed (and never owned)."""
    for path in sorted(run_dir.iterdir()):
        rel = path.relative_to(run_dir)
        if path.is_symlink():
            yield path, False
        elif path.is_dir():
            if not _owned(rel, is_file=False):
                yield path, False
                continue
            for inner in sorted(path.iterdir()):
                plain = inner.is_file() and not inner.is_symlink()
                yield inner, plain and _owned(inner.relative_to(run_dir), is_file=True)
        else:
            yield path, path.is_file() and _owned(rel, is_file=True)


def foreign_files(run_dir: Path) -> list[str]:
    """The entries of RUN_DIR that resnetlab did not write (names relative to it, folders with a trailing /)."""
    if not run_dir.is_dir():
        return []
    return [str(p.relative_to(run_dir)) + ("/" if p.is_dir() and not p.is_symlink() else "")
            for p, owned in _walk(run_dir) if not owned]


def owned_files(run_dir: Path) -> list[Path]:
    """The files of the run format in RUN_DIR (the lock file excepted)."""
    return [p for p, owned in _walk(run_dir) if owned and p.name != LOCK] if run_dir.is_dir() else []


def clear_run(run_dir: Path) -> None:
    """Delete the run-format files of RUN_DIR (not its lock) and its then-empty run-format folders, and nothing
    else: never a tree, never a link's target.

    Raises:
        UserError: RUN_DIR holds anything resnetlab did not write (the message names a few of them).
    """
    foreign = foreign_files(run_dir)
    if foreign:
        shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
        raise UserError(f"{run_dir} holds files resnetlab did not write ({shown}); nothing was deleted: move them "
                        "away, or choose another --out")
    for path in owned_files(run_dir):
        path.unlink()
    remove_empty_owned_dirs(run_dir)


def remove_empty_owned_dirs(run_dir: Path) -> None:
    for name in OWNED_DIRS:
        folder = run_dir / name
        if folder.is_dir() and not folder.is_symlink():
            with contextlib.suppress(OSError):
                folder.rmdir()

