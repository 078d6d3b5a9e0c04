"""Issue 26's smaller fixes: a default validation split that leaves a small training set usable, fine-tuning from
one of our checkpoints with its model options, `evaluate --split train`, and the final training numbers in the
report."""

from __future__ import annotations

import json

import pytest
import yaml
from support.enginekit import tiny_config

from resnetlab.engine import builders
from resnetlab.engine.trainer import train
from resnetlab.errors import UserError
from resnetlab.inference.evaluate import evaluate
from resnetlab.reports.report import write_report


def test_the_default_validation_split_is_5000_on_full_sets_and_10_percent_of_small_ones(tiny_root):
    assert builders.val_count(None, 50_000, "cifar10") == 5000  # the paper's 45k/5k split stays
    assert builders.val_count(None, 60_000, "fashion-mnist") == 5000
    assert builders.val_count(None, 5_000, "cifar10") == 500  # a 5,000-image CIFAR-10 copy: 4,500 to train on
    data = builders.build_data(tiny_config(tiny_root, None, data__val_size=None), with_test=False)
    assert (len(data.train), len(data.val)) == (432, 48)  # 480 images; 5,000 would have left none


@pytest.fixture(scope="module")
def option_b_run(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "source"
    train(tiny_config(tiny_root, out, model__name="resnet20", model__shortcut="B", train__iters=3))
    return out


def test_fine_tuning_takes_the_checkpoints_model_options_unless_set(tiny_root, tmp_path, option_b_run):
    weights = option_b_run / "checkpoints" / "best.pt"
    run = train(tiny_config(tiny_root, tmp_path / "ft", model__name="resnet20", model__weights=str(weights),
                            train__iters=2))
    assert yaml.safe_load((run.run_dir / "config.yaml").read_text())["model"]["shortcut"] == "B"
    with pytest.raises(UserError, match="do not fit this model"):  # the user's own setting wins (and cannot load)
        train(tiny_config(tiny_root, tmp_path / "ft-a", model__name="resnet20", model__shortcut="A",
                          model__weights=str(weights), train__iters=2))


def test_evaluate_split_train_and_the_reports_training_numbers(option_b_run, run_cli):
    page = write_report(option_b_run).read_text()
    assert "final training error (last logging interval)" in page and "final training loss" in page
    result = evaluate(option_b_run, split="train")
    assert result["split"] == "train" and result["n"] == 480 - 96  # the images it trained on, all of them once
    assert json.loads((option_b_run / "eval_train.json").read_text())["n"] == 384
    page = write_report(option_b_run).read_text()
    assert f"{100 * (1 - result['acc']):.2f}%" in page and "final training error (full pass, eval mode)" in page
    code, out, err = run_cli("evaluate", option_b_run, "--split", "train")
    assert code == 0
    code, out, err = run_cli("evaluate", option_b_run, "--split", "train", "--data", "fashion-mnist")
    assert code == 2 and "--split train is the run's own train split; with --data use --split test" in err
