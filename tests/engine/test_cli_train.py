"""`resnetlab train` through the CLI: --print-config, --list-recipes, refusing to overwrite, one-line errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
from support.enginekit import cli_args

from resnetlab.engine.config import load_config


def _leaf_count(obj: object) -> int:
    return sum(_leaf_count(getattr(obj, f.name)) if dataclasses.is_dataclass(getattr(obj, f.name)) else 1
               for f in dataclasses.fields(obj))


def test_print_config_lists_every_key_with_flags_applied(run_cli):
    code, out, err = run_cli("train", "--recipe", "he2016-cifar10", "--lr", "0.3", "--epochs", "5",
                             "--set", "train.top_k=3", "--print-config")
    assert code == 0, err
    lines = out.strip().splitlines()
    # every key but the one of train.epochs / train.iters not in force
    assert len(lines) == _leaf_count(load_config(None, [])) - 1 and all(" = " in line for line in lines)
    for expected in ("optim.lr = 0.3", "train.epochs = 5", "train.top_k = 3", "model.shortcut = A",
                     "recipe = he2016-cifar10"):
        assert expected in lines
    assert not any(line.startswith("train.iters") for line in lines)


def test_print_config_shows_only_the_budget_in_force(run_cli):
    code, out, _ = run_cli("train", "--recipe", "he2016-cifar10", "--print-config")
    assert code == 0 and "train.iters = 64000" in out.splitlines() and "train.epochs" not in out


def test_epochs_and_iters_together_are_refused_in_one_line(run_cli):
    for order in (("--epochs", "2", "--iters", "30"), ("--iters", "30", "--epochs", "2")):
        code, out, err = run_cli("train", *order, "--out", "never", "--print-config")
        assert code == 2 and out == "" and "not allowed with argument" in err and len(err.strip().splitlines()) == 1


def test_list_recipes(run_cli):
    code, out, _ = run_cli("train", "--list-recipes")
    names = [line.split()[0] for line in out.strip().splitlines()]
    assert code == 0 and names == sorted(names)
    assert {"fmnist-fast", "he2016-cifar10-deep", "seed001-fmnist"} <= set(names)


def test_cli_train_writes_a_run_and_prints_where(tiny_root, tmp_path, run_cli):
    code, out, err = run_cli(*cli_args(tiny_root, tmp_path / "run", train__iters=4))
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert f"{100 * summary['test_acc']:.2f}%" in out and str(tmp_path / "run") in out


def test_an_existing_run_directory_is_never_overwritten(base_run, tiny_root, run_cli):
    before = {p: p.stat().st_mtime_ns for p in base_run.rglob("*") if p.name != ".lock"}  # the lock's own PID note
    code, _, err = run_cli(*cli_args(tiny_root, base_run, train__iters=2))
    assert code == 2 and "already exists" in err and "--resume" in err
    assert {p: p.stat().st_mtime_ns for p in base_run.rglob("*") if p.name != ".lock"} == before


@pytest.mark.parametrize("extra, words", [
    ({"model__name": "resnet21"}, ["resnet21", "resnet20"]),
    ({"optim__lr": -0.1}, ["optim.lr", "positive"]),
    ({"data__batch_size": 1000}, ["batch_size", "384"]),
    ({"data__name": "cifar11"}, ["cifar11"]),
    ({"data__val_size": 480}, ["val_size"]),
    ({"train__device": "cuda"}, ["cuda"]),
])
def test_bad_settings_exit_2_with_one_line_and_no_run_directory(tiny_root, tmp_path, run_cli, extra, words):
    if extra.get("train__device") == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    code, out, err = run_cli(*cli_args(tiny_root, tmp_path / "run", **extra))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("resnetlab: error: "), err
    for word in words:
        assert word in err
    assert not (tmp_path / "run").exists()  # fixing the setting and re-running the same command works


def test_missing_data_directory(tmp_path, run_cli):
    code, _, err = run_cli(*cli_args(tmp_path / "nowhere", tmp_path / "run"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "mnist" in err and "nowhere" in err


def test_out_is_required(run_cli):
    code, _, err = run_cli("train", "--iters", "1")
    assert code == 2 and "--out" in err
