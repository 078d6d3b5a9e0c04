"""Issue 26's names in a sweep: pre-activation and generated bottleneck nets are grid values like any other, and
runs that log gradient norms give the sweep its gradflow.png."""

from __future__ import annotations

import json

import pytest
import yaml

from resnetlab.reports.sweep_run import run_sweep

pytestmark = pytest.mark.numeric


def test_preact_and_bottleneck_names_in_a_sweep(tiny_mnist, tmp_path):
    fixed = {"data.name": "mnist", "data.root": str(tiny_mnist), "data.val_size": 20, "data.batch_size": 20,
             "train.iters": 2, "train.log_every": 1, "train.grad_norms": "stage", "train.device": "cpu",
             "train.threads": 1, "train.quiet": True, "schedule.name": "constant", "optim.lr": 0.05,
             "model.shortcut": "B"}  # a recipe-style option both nets take
    spec = tmp_path / "zoo.yaml"
    spec.write_text(yaml.safe_dump({"recipe": "fmnist-fast", "set": fixed, "seeds": [0],
                                    "grid": {"model.name": ["preact20", "resnet29-bottleneck"]}}))
    results = run_sweep(spec, tmp_path / "out").read_text()
    for name in ("preact20_seed0", "resnet29-bottleneck_seed0"):
        summary = json.loads((tmp_path / "out" / "runs" / name / "summary.json").read_text())
        assert summary["model"] == name.rsplit("_", 1)[0] and summary["steps"] == 2
    assert "preact20" in results and "resnet29-bottleneck" in results
    assert (tmp_path / "out" / "gradflow.png").is_file()
