"""Runs side by side: the Markdown table of their summaries."""

from __future__ import annotations

import pytest
from support.sweepkit import fake_curve, fake_summary, write_fake_run

from resnetlab.engine.config import load_config
from resnetlab.engine.rundir import write_config
from resnetlab.errors import UserError
from resnetlab.reports.compare import COLUMNS, runs_table


def _run(path, recipe: str, summary: dict | None):
    write_fake_run(path, summary, fake_curve([0.5], [0.6]))
    write_config(path, load_config(recipe, []))
    return path


def test_runs_table_has_one_row_per_run_with_speed_and_accuracy(tmp_path):
    slow = _run(tmp_path / "tutorial", "seed001-fmnist", fake_summary(0.9, 0.91, 0.95, recipe="seed001-fmnist",
                                                                     train_time_s=120.0, steps=6, images_per_s=12.8))
    no_val = {**fake_summary(0.8, 0.85, 0.9, recipe="fmnist-fast", test_acc=0.8123), "best_val_acc": None}
    fast = _run(tmp_path / "fast", "fmnist-fast", no_val)
    lines = runs_table([slow, fast], labels=["96 px (tutorial)", "fast"]).splitlines()
    assert lines[0] == "| " + " | ".join(COLUMNS) + " |" and len(lines) == 4
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    row = dict(zip(COLUMNS, cells, strict=True))
    assert row["run"] == "96 px (tutorial)" and row["recipe"] == "seed001-fmnist" and row["model"] == "resnet18"
    assert (row["input (px)"], row["batch"], row["iterations"]) == ("96", "256", "6")
    assert (row["train time (s)"], row["s / iteration"], row["images/s"]) == ("120.0", "20.000", "13")
    assert (row["best val acc"], row["test acc"]) == ("91.00%", "89.00%")
    fast_row = dict(zip(COLUMNS, [c.strip() for c in lines[3].strip("|").split("|")], strict=True))
    assert (fast_row["input (px)"], fast_row["best val acc"], fast_row["test acc"]) == ("native", "–", "81.23%")


def test_runs_table_refuses_unfinished_runs_and_mismatched_labels(tmp_path):
    unfinished = _run(tmp_path / "unfinished", "fmnist-fast", None)
    with pytest.raises(UserError, match="has not finished"):
        runs_table([unfinished])
    with pytest.raises(UserError, match="2 labels for 1 runs"):
        runs_table([unfinished], labels=["a", "b"])
    with pytest.raises(UserError, match="at least one"):
        runs_table([])


def test_compare_command_prints_the_table(tmp_path, run_cli):
    a = _run(tmp_path / "a", "fmnist-fast", fake_summary(0.9, 0.91, 0.95, recipe="fmnist-fast"))
    b = _run(tmp_path / "b", "fmnist-fast", fake_summary(0.8, 0.85, 0.9, recipe="fmnist-fast"))
    code, out, err = run_cli("compare", a, b, "--labels", "first,second")
    assert code == 0, err
    assert out.strip() == runs_table([a, b], labels=["first", "second"])
    code, _, err = run_cli("compare", a, b, "--labels", "one")
    assert code == 2 and "1 labels for 2 runs" in err
