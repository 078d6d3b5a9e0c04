"""What a run shows while it trains: enough metrics rows for a curve in a short run, and progress lines whose
running accuracy does not jump when the accumulator starts over at a row."""

from __future__ import annotations

import pytest
from support.enginekit import read_rows, tiny_config

from resnetlab.engine.config import format_config, load_config
from resnetlab.engine.runlog import running_window
from resnetlab.engine.trainer import train


def test_a_short_run_logs_often_enough_for_a_curve(tiny_root, tmp_path, one_thread):
    train(tiny_config(tiny_root, tmp_path / "run", train__iters=40, train__eval_every=20, train__log_every="auto"))
    steps = [row["step"] for row in read_rows(tmp_path / "run")]
    assert steps == list(range(2, 41, 2))  # 40 // 20: a row every 2 steps (a fixed 50 drew 2 points)
    assert "train.log_every = auto" in format_config(load_config("fmnist-fast"))


def test_an_explicit_log_every_is_kept(tiny_root, tmp_path, one_thread):
    train(tiny_config(tiny_root, tmp_path / "run", train__iters=12, train__eval_every=12, train__log_every=5))
    assert [row["step"] for row in read_rows(tmp_path / "run")] == [5, 10, 12]


def test_the_running_window_joins_the_last_row_without_a_jump():
    last_row, now = (0.9, 0.60), (0.5, 0.90)  # the new interval's first steps happen to be lucky
    assert running_window(now, last_row, 0, 50) == last_row  # right after a row: that row's numbers
    loss, acc = running_window(now, last_row, 5, 50)
    assert acc == pytest.approx(0.63) and loss == pytest.approx(0.86)  # 5 of 50 steps: a small move, not 60 -> 90
    assert running_window(now, last_row, 50, 50) == now
    assert running_window(now, None, 3, 50) == now  # no row yet: what there is
