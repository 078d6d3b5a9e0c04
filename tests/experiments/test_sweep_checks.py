"""A sweep checks every grid point before the first run, takes --set overrides, and reads its data set once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from resnetlab.engine import builders
from resnetlab.errors import UserError
from resnetlab.experiments.spec import load_spec, with_overrides
from resnetlab.reports.sweep_run import run_sweep

SETTINGS = {"data.name": "mnist", "data.val_size": 20, "data.batch_size": 20, "data.crop_padding": 0,
            "data.flip": False, "train.iters": 2, "train.eval_every": 2, "train.device": "cpu", "train.threads": 1,
            "train.quiet": True, "eval.batch_size": 64, "schedule.name": "constant", "optim.lr": 0.05}


def _spec(root: Path, grid: dict, seeds: list[int] = [0]) -> dict:  # noqa: B006
    return {"name": "t", "recipe": "fmnist-fast", "set": {**SETTINGS, "data.root": str(root)}, "grid": grid,
            "seeds": seeds}


def test_an_unknown_model_in_the_grid_fails_before_any_run(tiny_mnist, tmp_path):
    spec = _spec(tiny_mnist, {"model.name": ["resnet20", "resnet2O"]})
    with pytest.raises(UserError, match=r"run resnet2O_seed0: unknown model 'resnet2O'; did you mean resnet20\?"):
        run_sweep(spec, tmp_path / "out")
    assert not (tmp_path / "out" / "runs").exists()  # nothing trained, not even the good first point


def test_set_overrides_reach_every_run_and_refuse_grid_keys(tmp_path):
    raw = with_overrides("degradation-fmnist", ["train.epochs=1", "optim.lr=0.01"])
    spec = load_spec(raw)
    assert spec.fixed["train.epochs"] == 1 and spec.fixed["optim.lr"] == 0.01
    grid_key = next(iter(spec.grid))
    with pytest.raises(UserError, match=f"--set {grid_key}: sweep degradation-fmnist varies it in its grid"):
        with_overrides("degradation-fmnist", [f"{grid_key}=1"])
    with pytest.raises(UserError, match="may not set 'train.seed'"):
        with_overrides("degradation-fmnist", ["train.seed=3"])


def test_sweep_cli_takes_set_and_its_hint_names_sweep_help(tiny_mnist, tmp_path, run_cli, monkeypatch):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(_spec(tiny_mnist, {"model.name": ["resnet20"]})))
    code, _, err = run_cli("sweep", spec, "--out", tmp_path / "out", "--bogus")
    assert code == 2 and "(see 'resnetlab sweep --help')" in err
    code, out, err = run_cli("sweep", spec, "--out", tmp_path / "out", "--set", "train.iters=4")
    assert code == 0, err
    saved = yaml.safe_load((tmp_path / "out" / "sweep.yaml").read_text())
    assert saved["set"]["train.iters"] == 4
    assert '"steps": 4' in (tmp_path / "out" / "runs" / "resnet20_seed0" / "summary.json").read_text()


def test_an_in_process_sweep_reads_each_split_once(tiny_mnist, tmp_path, monkeypatch):
    calls = []
    real = builders.load_dataset

    def counting(name, *args, **kwargs):
        calls.append(kwargs.get("split"))
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builders, "load_dataset", counting)
    run_sweep(_spec(tiny_mnist, {"model.name": ["resnet20"]}, seeds=[0, 1]), tmp_path / "out")
    assert sorted(calls) == ["test", "train"]  # two runs, each split read once
