"""A new user's first hour (issue 12): the Python API after train(), recipes and flags that fit together, small
image folders, messages that agree with each other, progress, and `--help` that says what each flag does."""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support.enginekit import cli_args, read_rows, tiny_config, train_until_stopped
from support.evalkit import write_image_folder

import resnetlab
from resnetlab.cli import build_parser
from resnetlab.engine import builders, runlog
from resnetlab.engine.config import load_config
from resnetlab.engine.trainer import train
from resnetlab.errors import UserError

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_name_in_the_readme_python_snippets_works_after_train(tiny_root, tmp_path):
    """`resnetlab.evaluate` once became the submodule of the same name after `train()` imported it."""
    result = resnetlab.train(tiny_config(tiny_root, tmp_path / "run", train__iters=3))
    code = "\n".join(re.findall(r"```python\n(.*?)```", README.read_text(), re.S))
    names = sorted(set(re.findall(r"\bresnetlab\.([a-z_]+)\(", code)))
    assert {"train", "evaluate", "load_checkpoint", "predict", "create_model", "load_dataset"} <= set(names)
    assert all(callable(getattr(resnetlab, name)) for name in names), names
    metrics = resnetlab.evaluate(result.run_dir)  # nothing but the run
    assert metrics["acc"] == result.summary["test_acc"] and metrics["n"] == 160
    model, info = resnetlab.load_checkpoint(result.run_dir)
    assert info["step"] == result.summary["best_step"] and not model.training


def test_importing_resnetlab_first_makes_openmp_threads_sleep():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    show = "import os; print(os.environ.get('OMP_WAIT_POLICY'))"
    first = subprocess.run([sys.executable, "-c", f"import resnetlab, torch; {show}"], env=env, capture_output=True,
                           text=True)
    user = subprocess.run([sys.executable, "-c", f"import resnetlab; {show}"], capture_output=True, text=True,
                          env={**env, "OMP_WAIT_POLICY": "ACTIVE"})
    assert first.stdout.strip() == "PASSIVE" and user.stdout.strip() == "ACTIVE"  # the user's setting wins


def test_a_recipes_model_options_do_not_stick_to_another_model(tiny_root, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="resnetlab")
    cfg = load_config("seed000-cifar10", [*tiny_config_overrides(tiny_root, tmp_path / "plain"), "model.name=plain20",
                                          "train.quiet=false"])  # --quiet would silence the note (issue 23)
    assert cfg.model.shortcut == "B"  # the recipe's, meant for resnet20
    result = train(cfg)
    assert result.summary["model"] == "plain20" and "plain20 takes no shortcut=B; dropped" in caplog.text
    assert "shortcut: null" in (tmp_path / "plain" / "config.yaml").read_text()  # config.yaml: what ran


def tiny_config_overrides(root: Path, out: Path) -> list[str]:
    from support.enginekit import tiny_overrides

    return [*tiny_overrides(root, out), "train.iters=2", "data.crop_padding=0", "data.flip=false"]


def test_val_size_takes_a_fraction_and_folders_default_to_a_tenth_or_their_val_folder(tmp_path):
    assert builders.val_count(0.1, 250, "mnist") == 25 and builders.val_count(None, 50000, "cifar10") == 5000
    assert builders.val_count(None, 300, "imagefolder:x") == 30 and builders.val_count(0, 300, "mnist") == 0
    folder = write_image_folder(tmp_path / "shapes", {"train": 100, "test": 4})  # 300 training images
    cfg = load_config("fmnist-resnet20", [f"data.name=imagefolder:{folder}", "data.channels=1"])
    assert len(builders.build_data(cfg).val) == 30  # the default was 5,000: more than the folder holds
    write_image_folder(folder, {"val": 5})
    data = builders.build_data(cfg)
    assert len(data.val) == 15 and len(data.train) == 300  # the folder's own val/ split


def test_drop_last_auto_keeps_a_large_incomplete_batch_and_says_so(caplog):
    caplog.set_level(logging.INFO, logger="resnetlab")
    assert not builders.drops_last_batch("auto", 250, 128)  # 122 of 250 images would go
    assert "keeping the incomplete last batch of 122 images" in caplog.text
    assert builders.drops_last_batch("auto", 55000, 256)  # 216 images: under 1% of the epoch
    assert builders.drops_last_batch(True, 250, 128) and "drops 122 of the 250" in caplog.text
    assert not builders.drops_last_batch(False, 55000, 256)


def test_without_validation_the_final_line_does_not_claim_a_best_validation_model(tiny_root, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="resnetlab")
    train(tiny_config(tiny_root, tmp_path / "run", data__val_size=0, train__iters=3, train__quiet=False))
    final = [r.getMessage() for r in caplog.records if r.getMessage().startswith("test accuracy")]
    assert len(final) == 1 and "final model; no validation split" in final[0] and "best-validation" not in final[0]


def _stopped_run(root: Path, out: Path, step: int) -> None:

    train_until_stopped(tiny_config(root, out, train__iters=6), step)


def test_resume_names_only_the_settings_the_user_passed(tiny_root, tmp_path, run_cli, caplog):
    caplog.set_level(logging.WARNING, logger="resnetlab")
    _stopped_run(tiny_root, tmp_path / "a", 3)
    code, _, err = run_cli("train", "--out", tmp_path / "a", "--resume")  # no setting passed: none to ignore
    assert code == 0 and "ignoring" not in caplog.text, err
    _stopped_run(tiny_root, tmp_path / "b", 3)
    code, _, _ = run_cli("train", "--out", tmp_path / "b", "--resume", "--lr", "0.3", "--quiet")
    assert code == 0 and "ignoring optim.lr=0.3 " in caplog.text
    assert "quiet" not in caplog.text.split("ignoring")[1].split("(")[0]  # a resume may change --quiet


def test_ctrl_c_and_the_end_of_a_run_print_one_line_each(tiny_root, tmp_path, run_cli, caplog):
    from torch.optim.optimizer import register_optimizer_step_post_hook

    handle = register_optimizer_step_post_hook(lambda o, a, k: os.kill(os.getpid(), 2))
    try:
        code, out, err = run_cli(*cli_args(tiny_root, tmp_path / "run", train__iters=6))
    finally:
        handle.remove()
    assert code == 130 and err.count("checkpoint saved") == 1 and "checkpoint saved" not in caplog.text
    code, out, err = run_cli(*cli_args(tiny_root, tmp_path / "run", train__iters=6), "--resume")
    assert code == 0 and out.count("test accuracy") + caplog.text.count("test accuracy") == 1


def test_progress_without_a_terminal_comes_at_least_every_30_seconds(tiny_root, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(runlog, "MESSAGE_EVERY_S", 0.0)  # "30 s" passes at every step
    caplog.set_level(logging.INFO, logger="resnetlab")
    train(tiny_config(tiny_root, tmp_path / "run", train__iters=6, train__log_every=100, train__quiet=False))
    lines = [r.getMessage() for r in caplog.records if re.match(r"step \d/6 ", r.getMessage())]
    assert [line.split()[1] for line in lines][:5] == ["1/6", "2/6", "3/6", "4/6", "5/6"] and "ETA" in lines[0]


def test_the_bar_advances_every_step(tmp_path, monkeypatch):
    monkeypatch.setattr(runlog, "interactive_stderr", lambda: True)
    logger = runlog.RunLogger(tmp_path, total_iters=10, start_step=2, quiet=False)
    try:
        for step in (3, 4, 5):
            logger.step(step)
            assert logger._bar.n == step
    finally:
        logger.close()


def test_metrics_rows_come_every_log_every_steps_and_at_evaluations(tiny_root, tmp_path):
    train(tiny_config(tiny_root, tmp_path / "run", train__iters=14, train__log_every=4, train__eval_every=6))
    rows = read_rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [4, 6, 8, 12, 14]
    assert [r["step"] for r in rows if r["val_acc"] is not None] == [6, 12, 14]
    assert all(r["train_loss"] is not None for r in rows)


def test_every_option_of_every_command_says_what_it_does():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    empty = [f"{name} {action.option_strings[0]}" for name, sub in commands.items() for action in sub._actions
             if action.option_strings and not action.help and action.dest != "help"]
    assert not empty
    train_help = commands["train"].format_help()
    assert "default: fmnist-fast" in train_help and "default: 200" in commands["lr-find"].format_help()


def test_evaluate_reads_only_the_test_split_and_takes_device_batch_and_other_data(tiny_run, tmp_path, monkeypatch):
    loaded = []
    real = builders.load_split
    monkeypatch.setattr(builders, "load_split", lambda cfg, split: loaded.append(split) or real(cfg, split))
    result = resnetlab.evaluate(tiny_run, device="cpu", batch_size=5)
    assert loaded == ["test"] and result["n"] == 36 and result["device"] == "cpu"
    other = write_image_folder(tmp_path / "more", {"test": 3}, seed=5)
    result = resnetlab.evaluate(tiny_run, data=f"imagefolder:{other}")
    assert result["n"] == 9 and (tiny_run / "eval_test_imagefolder-more.json").is_file()
    with pytest.raises(UserError, match="--batch-size must be at least 1"):
        resnetlab.evaluate(tiny_run, batch_size=0)
    assert torch.get_num_threads() >= 1


def test_train_and_test_size_keep_stratified_subsets_and_evaluate_uses_the_same_test_images(tiny_root, tmp_path):
    cfg = tiny_config(tiny_root, tmp_path / "run", data__train_size=96, data__test_size=0.25, train__iters=2)
    data = builders.build_data(cfg)
    full = builders.build_data(tiny_config(tiny_root, None))
    assert len(data.train) == 96 and len(data.test) == 40 and len(data.val) == len(full.val) == 96  # val stays whole
    assert torch.equal(data.val.images, full.val.images)
    assert torch.bincount(data.train.labels).tolist() == [24] * 4
    assert torch.bincount(data.test.labels).tolist() == [10] * 4
    # the test subset does not depend on the run's seed: the runs of a sweep are tested on the same images
    other_seed = builders.build_data(tiny_config(tiny_root, None, data__test_size=0.25, train__seed=5))
    assert torch.equal(other_seed.test.images, data.test.images)
    run_dir = train(cfg).run_dir
    assert resnetlab.evaluate(run_dir)["n"] == 40  # evaluate tests the run's own test subset
    assert builders.subsample(data.test, None, 0, "data.test_size") is data.test
    assert builders.subsample(data.test, 500, 0, "data.test_size") is data.test  # more than there are: all of them
