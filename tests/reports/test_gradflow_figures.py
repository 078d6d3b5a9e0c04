"""Gradient flow figures: `resnetlab plot` beside the curves, and gradflow.png of a sweep, from metrics.jsonl rows."""

from __future__ import annotations

import pytest
from support.sweepkit import fake_curve, fake_summary, write_fake_run

from resnetlab.errors import UserError
from resnetlab.reports.gradflow import draw_grad_flow, grad_series
from resnetlab.reports.sweep_tables import aggregate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GROUPS = ("stem", "layer1", "layer2", "layer3", "head")


def curve_with_norms(first_layers: float) -> list[dict]:
    rows = fake_curve([0.5, 0.6, 0.7], [None, None, 0.7])
    for i, row in enumerate(rows):
        row["grad_norm"] = {g: first_layers * (j + 1) / (i + 1) for j, g in enumerate(GROUPS)}
    return rows


def test_series_keep_the_networks_order_and_skip_rows_without_norms():
    rows = [{"step": 5, "train_loss": 1.0}, *curve_with_norms(1.0)]
    steps, groups = grad_series(rows)
    assert steps == [10, 20, 30] and list(groups) == list(GROUPS)
    assert groups["layer1"] == [2.0, 1.0, pytest.approx(2 / 3)]


def test_plot_draws_the_gradient_flow_beside_the_curves(tmp_path, run_cli):
    for name, scale in (("plain56", 0.01), ("resnet56", 1.0)):
        write_fake_run(tmp_path / name, fake_summary(0.9, 0.9, 0.9), curve_with_norms(scale))
    code, out, err = run_cli("plot", tmp_path / "plain56", tmp_path / "resnet56", "--out", tmp_path / "both.png")
    assert code == 0 and out.split() == [str(tmp_path / "both.png"), str(tmp_path / "both_gradflow.png")]
    assert (tmp_path / "both_gradflow.png").read_bytes()[:8] == PNG_MAGIC
    write_fake_run(tmp_path / "plain", fake_summary(0.9, 0.9, 0.9), fake_curve([0.5], [0.5]))
    code, out, err = run_cli("plot", tmp_path / "plain", "--out", tmp_path / "one.png")
    assert code == 0 and out.split() == [str(tmp_path / "one.png")]  # no norms logged: the curves alone
    with pytest.raises(UserError, match="no run here logged gradient norms; train with --set train.grad_norms"):
        draw_grad_flow([("plain", fake_curve([0.5], [0.5]))], tmp_path / "x.png")


def test_a_sweep_whose_runs_logged_norms_gets_gradflow_png(fake_sweep_dir):
    out = fake_sweep_dir({"recipe": "fmnist-fast", "grid": {"model.name": ["plain56", "resnet56"]}, "seeds": [0]})
    for name, scale in (("plain56_seed0", 0.01), ("resnet56_seed0", 1.0)):
        write_fake_run(out / "runs" / name, fake_summary(0.9, 0.9, 0.9), curve_with_norms(scale))
    results = aggregate(out).read_text()
    assert (out / "gradflow.png").read_bytes()[:8] == PNG_MAGIC and (out / "figure6.png").is_file()
    assert "gradflow.png" in results
