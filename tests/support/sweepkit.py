"""Fake run directories in the run-directory format of DESIGN.md, for the aggregation tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_fake_run(run_dir: Path, summary: dict[str, Any] | None, curve: list[dict[str, Any]]) -> None:
    """A run directory as the engine leaves it: metrics.jsonl, and summary.json when `summary` is given."""
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in curve))
    if summary is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary))


def fake_summary(test_acc_final: float, best_val_acc: float, final_train_acc: float, **extra: Any) -> dict:
    return {"best_val_acc": best_val_acc, "best_step": 40, "test_acc": test_acc_final - 0.01, "test_loss": 0.5,
            "test_acc_final": test_acc_final, "final_train_acc": final_train_acc, "params": 270_000, "macs": 4.1e7,
            "steps": 40, "train_time_s": 10.0, "wall_time_s": 12.0, "images_per_s": 300.0, **extra}


def fake_curve(train: list[float], val: list[float | None], every: int = 10) -> list[dict[str, Any]]:
    return [{"step": every * (i + 1), "epoch": i + 1, "lr": 0.1, "train_loss": 1.0, "train_acc": t, "val_loss": 1.0,
             "val_acc": v, "images_per_s": 300.0, "time_s": float(i)} for i, (t, v) in enumerate(zip(train, val,
                                                                                                 strict=True))]
