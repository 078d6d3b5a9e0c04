"""Bad values that used to end in a traceback, or were silently accepted: each is one line and exit code 2."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from resnetlab.engine.config import load_config
from resnetlab.engine.recipes import DATA_RECIPES, default_recipe
from resnetlab.errors import UserError


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.seed=100000000000000000000"], "train.seed must be from 0 to 4294967295"),
    (["train.seed=-1"], "train.seed must be from 0 to 4294967295"),
    (["optim.name=adam", "optim.eps=nan"], "optim.eps must be a finite number"),
    (["optim.eps=0"], "optim.eps must be a small positive number"),
    (["optim.lr=.inf"], "optim.lr must be a finite number"),
])
def test_impossible_values_are_refused(overrides, message):
    with pytest.raises(UserError, match=message):
        load_config("fmnist-fast", overrides)


def test_a_binary_recipe_file_is_one_line(tmp_path, run_cli):
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(bytes(range(128, 256)) * 3)
    code, _, err = run_cli("train", "--recipe", garbage, "--print-config")
    assert code == 2 and err.strip().splitlines() == [f"resnetlab: error: {garbage} is not a YAML text file (it holds "
                                                      "bytes that are not UTF-8 text)"]


@pytest.mark.parametrize("flag", ["--iters", "--epochs"])
def test_a_zero_budget_is_refused(run_cli, tmp_path, flag):
    code, _, err = run_cli("train", flag, "0", "--out", tmp_path / "run")
    assert code == 2 and f"argument {flag}: must be at least 1, got 0" in err and not (tmp_path / "run").exists()


def test_the_default_recipe_follows_the_data_set(caplog):
    assert default_recipe([]) == "fmnist-fast"
    with caplog.at_level("INFO"):
        assert default_recipe(["data.name=mnist"]) == "fmnist-fast"
        assert default_recipe(["data.name=cifar10", "train.epochs=1"]) == "cifar10-fast"
        assert default_recipe(["data.name=CIFAR-100"]) == "cifar10-fast"
        assert default_recipe(["data.name=imagefolder:photos"]) == "fmnist-fast"
    assert "no --recipe: using cifar10-fast (the recipe for cifar10" in caplog.text
    assert DATA_RECIPES["fashion-mnist"] == "fmnist-fast"


def test_train_on_cifar_without_a_recipe_uses_the_cifar_recipe(run_cli, caplog):
    caplog.set_level(logging.INFO, logger="resnetlab")  # in-process: pytest's handler, not main's, takes the log
    assert load_config(None, ["data.name=cifar10"]).recipe == "cifar10-fast"
    code, out, _ = run_cli("train", "--data", "cifar10", "--print-config")
    assert code == 0 and "recipe = cifar10-fast" in out and "no --recipe: using cifar10-fast" in caplog.text


def test_a_model_option_the_user_set_for_a_model_without_it_is_an_error(run_cli, tiny_root, tmp_path):
    args = ["train", "--recipe", "fmnist-fast", "--data", "mnist", "--data-dir", tiny_root, "--out", tmp_path / "r"]
    code, _, err = run_cli(*args, "--set", "model.options={foo: 1}")
    assert code == 2 and "airbench takes no option 'foo' (set by model.options); it takes:" in err
    code, _, err = run_cli(*args, "--model", "plain20", "--set", "model.shortcut=B")
    assert code == 2 and "plain20 takes no option 'shortcut' (set by model.shortcut)" in err
    assert not (tmp_path / "r").exists()


def test_an_image_folder_of_one_class_is_refused(tmp_path):
    from support.official_formats import write_png

    from resnetlab.engine.builders import build_data

    for i in range(4):
        write_png(tmp_path / "one" / "cat" / f"{i}.png", np.full((8, 8, 3), 40 * i, dtype=np.uint8))
    cfg = load_config("fmnist-fast", [f"data.name=imagefolder:{tmp_path / 'one'}", "data.batch_size=2"])
    with pytest.raises(UserError, match=r"has one class \(cat\); a classifier needs images of two or more classes"):
        build_data(cfg)


def test_damaged_metrics_rows_are_skipped_and_named(tmp_path, caplog):
    import json

    from resnetlab.engine.rundir import read_metrics

    rows = [{"step": 5, "train_loss": 2.0}, {"step": 10, "train_loss": "abc"}, {"step": None}, "x",
            {"step": 15, "train_loss": 1.5, "val_acc": None}]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "metrics.jsonl").write_bytes(text.encode() + b"\xff\xfe garbage\n" + b'{"step": 20, "lr": 0.1}\n{"st')
    with caplog.at_level("WARNING"):
        good = read_metrics(tmp_path)
    assert [r["step"] for r in good] == [5, 15, 20]  # the torn last line is skipped without a word
    assert "metrics.jsonl: skipped 4 damaged rows (line 2, 3, 4, 6: not a row of numbers)" in caplog.text


def test_explain_refuses_an_output_folder_that_is_a_file(tmp_path, random_checkpoint, run_cli):
    (tmp_path / "taken").write_text("mine")
    code, _, err = run_cli("explain", random_checkpoint, tmp_path / "taken", "--out", tmp_path / "taken")
    assert code == 2 and "is a file; give a folder for the Grad-CAM images" in err
    assert (tmp_path / "taken").read_text() == "mine"
